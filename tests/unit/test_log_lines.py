"""The per-message and per-refusal log lines, written through the logging `yrdx serve` sets up, while the data
path runs over the in-memory Kafka twin: one line per hop with the documented fields, RFC 3339 UTC times, a
repeated warning collapsed, and DOMAIN.md's synthetic ID numbers masked on every path."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from gateway import logs
from gateway.kafka.memory import MemoryPublisher
from gateway.relay.ingress import Ingress
from tests._util import with_use_context
from tests.unit._relay import REGION, REGISTRY, TYPE, Harness, close, harness

SH_ID, AH_ID = "310115198503120418", "34010420000229124X"  # synthetic (DOMAIN.md section 9)
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def json_lines(capfd: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """`logs.setup` as `yrdx serve` calls it, made by `start()` inside the test (the handler writes to the stderr
    of the moment it is made); `read()` returns the JSON lines written since."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    class Lines:
        @staticmethod
        def start() -> None:
            logs.setup("yrdx-gateway-sh", "INFO")

        @staticmethod
        def read() -> list[dict[str, Any]]:
            return [orjson.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    try:
        yield Lines
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    hx = await harness(tmp_path)
    yield hx
    await close(hx)


async def test_each_hop_is_one_line_with_the_documented_fields_and_ids_masked(h: Harness, json_lines: Any) -> None:
    json_lines.start()
    ingress = Ingress(h.cfg, REGISTRY, h.signer(REGION), MemoryPublisher(h.broker), h.state, h.audit, h.metrics)
    platform = h.cfg.platforms[0]
    sent = await ingress.submit(platform, with_use_context({"type": TYPE, "to": "JS", "correlation_id": f"case-{SH_ID}",
                                                            "payload": REGISTRY.examples(TYPE)[0]}), None)
    delivered_id, _ = h.send("JS", correlation_id=f"conv-{AH_ID}")
    _, refused = h.send("ZJ", payload={"nothing": "valid"}, correlation_id=SH_ID)
    await h.drain()
    lines = json_lines.read()
    by_msg = {line["msg"]: line for line in lines}
    accepted, delivered, rejected = by_msg["message accepted"], by_msg["message delivered"], by_msg["message rejected"]
    for line in (accepted, delivered, rejected):
        assert {"message_id", "type", "from", "to", "correlation_id", "outcome"} <= set(line)
        assert TS.fullmatch(line["ts"])
    assert accepted["message_id"] == getattr(sent, "id", None) and accepted["outcome"] == "accepted"
    assert delivered["message_id"] == delivered_id and delivered["from"] == "JS" and delivered["duration_ms"] >= 0
    assert rejected["reason"] == "schema_violation" and rejected["from"] == "ZJ"
    assert rejected["dead_letter"] == h.cfg.topics.dlq(REGION)
    text = orjson.dumps(lines).decode()
    assert SH_ID not in text and AH_ID not in text
    assert "310115********0418" in text and "340104********124X" in text
    del refused


def test_a_repeated_warning_is_written_once_per_interval_with_a_count(json_lines: Any) -> None:
    json_lines.start()
    log = logging.getLogger("gateway.test.repeat")
    repeat = next(f for f in logging.getLogger().handlers[0].filters if isinstance(f, logs.RepeatFilter))
    repeat._interval_s = 0.2
    for _ in range(50):
        log.warning("broker unavailable while flushing egress results; retrying")
    time.sleep(0.25)
    log.warning("broker unavailable while flushing egress results; retrying")
    log.info("an info line is never collapsed")
    log.info("an info line is never collapsed")
    lines = json_lines.read()
    warnings = [line for line in lines if line["level"] == "warning"]
    assert len(warnings) == 2 and "repeated" not in warnings[0] and warnings[1]["repeated"] == 49
    assert sum(1 for line in lines if line["level"] == "info") == 2
