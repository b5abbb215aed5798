# The verbs of the project. Each installs what it needs (virtualenv, packages, Kafka jars) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench kafka-jars clean image image-test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Downloads Apache Kafka's jars from Maven Central once into ~/.cache/yrdx (outside the repo).
kafka-jars: $(STAMP)
	$(BIN)/python -c 'from gateway.dev.local_kafka import LocalKafka, default_home; LocalKafka(default_home() / "broker").ensure_jars()'

demo: $(STAMP) kafka-jars
	$(BIN)/yrdx demo $(DEMO_ARGS)

test: $(STAMP) kafka-jars
	bash scripts/postgres.sh install
	bash scripts/chromium.sh install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway adapters tests bench
	$(BIN)/mypy
	bash scripts/helm-lint.sh
	bash scripts/promtool.sh

# The relay benchmark, then one SH replica against two on PostgreSQL state (bench/scale.py; SCALE_ARGS).
bench: $(STAMP) kafka-jars
	$(BIN)/python bench/goals.py $(BENCH_ARGS)
	$(BIN)/python bench/counter.py $(COUNTER_BENCH_ARGS)
	$(BIN)/python bench/files.py $(BENCH_FILES_ARGS)
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

# The container image (Dockerfile) from Debian packages alone: debootstrapped base and host-downloaded wheels, both
# cached in ~/.cache/yrdx/image; podman build --pull=never --network none. IMAGE=... names it.
image: $(STAMP)
	bash scripts/image.sh build

# The image's smoke test against a real broker: runs it with podman where containers can run, else inspects it.
image-test: image kafka-jars
	bash scripts/image.sh test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
