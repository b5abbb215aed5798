# The yrdx gateway image: one region's `yrdx serve`, non-root, the wheel installed into /opt/yrdx.
#
# With a registry (the default BASE is the Docker Official Image python:3.11.15-slim-bookworm, multi-arch
# index, pinned by digest):
#   docker build -t REGISTRY/yrdx:0.1.0 .         # or: podman build ...
# Without one (our machines, CI): `make image` debootstraps a Debian bookworm base with python3, downloads the
# wheels on the host into build/image/wheelhouse and builds this file with
#   podman build --pull=never --network none \
#     --build-arg BASE=localhost/bookworm-python:base --build-arg WHEELHOUSE=build/image/wheelhouse ...
#
# Stage 1 builds the project's wheel and collects every dependency as a binary wheel (from PyPI, or only from
# WHEELHOUSE when it is set: no network then). The final stage starts again from BASE and installs those wheels
# into a venv with the build stage's pip, mounted for the step: no compiler, no pip, no pip cache and no wheel
# file ends up in the image.
ARG BASE=docker.io/library/python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

FROM ${BASE} AS build
# A folder of the build context holding every wheel needed (make image: build/image/wheelhouse); empty: PyPI.
ARG WHEELHOUSE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
# .dockerignore lets in only what the wheel is made of (and the wheelhouse).
COPY . /src
# Behind a TLS-inspecting proxy, give pip that CA without baking it in: --secret id=pip_ca,src=/path/ca.pem.
RUN --mount=type=secret,id=pip_ca \
    set -eu; \
    if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="/src/$WHEELHOUSE"; fi; \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /opt/build; \
    /opt/build/bin/python -m pip wheel --no-deps --wheel-dir /dist/app /src; \
    /opt/build/bin/python -m pip wheel --only-binary=:all: --wheel-dir /dist/deps /dist/app/*.whl; \
    rm -f /dist/deps/yrdx-*.whl; \
    cd /dist/deps && sha256sum -- *.whl > /dist/deps.sha256; \
    cd /dist/app && sha256sum -- *.whl > /dist/app.sha256

FROM ${BASE}
ENV PATH=/opt/yrdx/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# uid/gid 10001: the chart's podSecurityContext. The image also runs as any other non-root uid (the files are
# world-readable; it writes only to /tmp and the state directory, which a volume replaces in Kubernetes).
RUN set -eu; \
    groupadd --gid 10001 yrdx; \
    useradd --uid 10001 --gid 10001 --home-dir /var/lib/yrdx --no-create-home --no-log-init --shell /usr/sbin/nologin yrdx; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/yrdx; \
    install -d -m 0755 /etc/yrdx
# The checksums of the wheels come first, so that each install step below is rebuilt exactly when its wheels
# change (the steps mount the build stage rather than copy from it, and a mount is not part of a step's cache
# key); they stay in the image as the record of what was installed.
COPY --from=build /dist/deps.sha256 /usr/local/share/yrdx/deps.sha256
RUN --mount=type=bind,from=build,source=/opt/build,target=/opt/build \
    --mount=type=bind,from=build,source=/dist,target=/dist \
    set -eu; \
    python3 -m venv --without-pip /opt/yrdx; \
    /opt/build/bin/python -m pip --python /opt/yrdx/bin/python install --no-index --no-deps /dist/deps/*.whl
COPY --from=build /dist/app.sha256 /usr/local/share/yrdx/app.sha256
RUN --mount=type=bind,from=build,source=/opt/build,target=/opt/build \
    --mount=type=bind,from=build,source=/dist,target=/dist \
    set -eu; \
    /opt/build/bin/python -m pip --python /opt/yrdx/bin/python install --no-index --no-deps /dist/app/*.whl; \
    /opt/build/bin/python -m pip --python /opt/yrdx/bin/python check; \
    yrdx --help > /dev/null; \
    python -c 'import gateway.runtime'

USER 10001:10001
WORKDIR /var/lib/yrdx
EXPOSE 8401
STOPSIGNAL SIGTERM
# `docker run IMAGE` serves the config mounted at /etc/yrdx/gateway.yaml (where the Helm chart mounts it);
# `docker run IMAGE /other/path.yaml` another one; `--entrypoint yrdx IMAGE token ...` any other command.
ENTRYPOINT ["yrdx", "serve", "--config"]
CMD ["/etc/yrdx/gateway.yaml"]

# Last, so that a new commit does not invalidate the cached steps above.
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
ARG SOURCE=""
ARG BASE
LABEL org.opencontainers.image.title="yrdx" \
      org.opencontainers.image.description="Yangtze River Delta data-exchange gateway: signed, schema-checked messages between regional platforms over Apache Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="yrdx developers" \
      org.opencontainers.image.base.name="${BASE}"
