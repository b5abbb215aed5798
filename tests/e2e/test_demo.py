"""`yrdx demo` end to end: four gateway processes of its own, the simulated platforms and every story, against
the session's broker (KAFKA_BOOTSTRAP_SERVERS pointed at it, so the demo starts no second Kafka), once per
signing suite.

The demo's exchange runs in a namespace of its own (`yrdx demo --namespace`), beside the session's exchange: the
session's gateways keep running, and neither exchange sees the other's messages.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from pathlib import Path

import pytest

from adapters.demo import run_demo
from tests.conftest import Broker, Exchange4

JOURNEY_ROW = re.compile(r"^\s+(\d{4}-\d\d-\d\dT\S+Z)\s+(SH|JS|ZJ|AH)\s+(\d+)\s+(\w+)\s")


@pytest.mark.parametrize("alg", ["ES256", "SM2SM3"])
async def test_demo_plays_every_story_and_prints_tables_and_a_journey(
    kafka: Broker, exchange: Exchange4, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, alg: str
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    out = io.StringIO()
    code = await asyncio.to_thread(run_demo, tmp_path / "demo", False, out, alg=alg, namespace=namespace)
    text = out.getvalue()
    assert code == 0, text

    assert f"using the Kafka cluster at {kafka.bootstrap_servers}" in text
    assert "starting Apache Kafka" not in text
    assert f"tampered record produced straight to {namespace}.yrdx.js.inbox" in text
    for family in ("identity", "license", "medical"):
        header = rf"^{family}\n\s+type\s+route\s+sent\s+delivered\s+rejected\s+p50 ms\s+p99 ms$"
        assert re.search(header, text, re.MULTILINE), text
    assert re.search(r"rejected: 1 x bad_signature \(tampered record", text)
    assert re.search(r"rejected: 1 x schema_violation ", text)
    assert "HTTP 403 not_permitted" in text and "/medfee_sumamt, /psn_no" in text

    journey = text[text.index("journey of medical.settlement.request"):]
    rows = [m.groups() for line in journey.splitlines() if (m := JOURNEY_ROW.match(line))]
    regions = {region for _, region, _, _ in rows}
    stages = [(region, stage) for _, region, _, stage in rows]
    assert regions == {"SH", "AH"}, journey
    assert {("SH", "accepted"), ("AH", "delivered"), ("SH", "receipt_received")} <= set(stages)
    assert [at for at, *_ in rows] == sorted(at for at, *_ in rows)
    assert "origin status (GET /v1/messages/{id} at SH): delivered" in journey
    assert "signed by AH" in journey and "envelope sha256 matches" in journey
    assert "FAILED" not in text
    # What it started, it stopped; what it printed holds no payload value (a patient's person number).
    assert re.search(r"stopping gateways: SH exit 0, JS exit 0, ZJ exit 0, AH exit 0", text)
    assert "34010099000010" not in text
    # The session's exchange ran on beside it, untouched.
    assert all(g.proc is not None and g.proc.poll() is None for g in exchange.gateways.values())
