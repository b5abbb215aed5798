"""Each gateway countersigns the other regions' signed audit heads, inside its own signed chain."""

from __future__ import annotations

import asyncio
import copy
import time

from gateway.audit.journey import read_audit_records
from gateway.schemas.registry import SchemaRegistry
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()


async def test_gateways_countersign_each_others_checkpoints(exchange: Exchange4, kafka: Broker) -> None:
    payload = copy.deepcopy(REGISTRY.examples("license.verify.request")[0])
    status, doc = await exchange.clients["JS"].send("license.verify.request", "ZJ", payload)
    assert status == 202
    deadline = time.monotonic() + 40  # heartbeats and countersigning rounds run every 10 s
    while True:
        records = await read_audit_records(kafka.bootstrap_servers, timeout_s=15)
        counters = [r for r in records if r["stage"] == "countersigned"]
        signers = {r["region"] for r in counters}
        if {"SH", "JS", "ZJ", "AH"} <= signers or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert {"SH", "JS", "ZJ", "AH"} <= signers, f"countersigning regions: {signers}"
    by_region = {(r["region"], r["seq"]): r["hash"] for r in records}
    for c in counters:
        of, seq, head = c["detail"]["of"], c["detail"]["seq"], c["detail"]["hash"]
        assert of != c["region"]
        assert by_region[(of, seq)] == head, f"{c['region']} countersigned {of}#{seq} with another hash"
