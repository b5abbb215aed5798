"""A dead letter can be put back once its cause is fixed: it is checked again, delivered once, and the audit
trail records the replay. Replaying it a second time delivers nothing more."""

from __future__ import annotations

import asyncio
import copy
import time

from gateway.audit.journey import read_audit_records
from gateway.schemas.registry import SchemaRegistry
from tests._util import yrdx
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()


async def test_a_refused_delivery_is_replayed_once_and_audited(exchange: Exchange4, kafka: Broker) -> None:
    exchange.sink.refusing = True
    try:
        payload = copy.deepcopy(REGISTRY.examples("license.verify.request")[0])
        status, doc = await exchange.clients["JS"].send("license.verify.request", "ZJ", payload)
        assert status == 202
        msg_id = doc["id"]
        rejected = await exchange.clients["JS"].wait_status(msg_id, "rejected")
        assert rejected["receipt"]["reason"] == "delivery_failed", rejected
    finally:
        exchange.sink.refusing = False

    config = str(exchange.exchange.config_path("ZJ"))
    listed = yrdx("dlq", "list", "--config", config, "--reason", "delivery_failed")
    assert listed.returncode == 0 and msg_id in listed.stdout, listed.stderr
    replay = yrdx("dlq", "replay", "--config", config, "--id", msg_id)
    assert replay.returncode == 0, replay.stderr

    await exchange.sink.wait_for("ZJ", msg_id)
    delivered = await exchange.clients["JS"].wait_status(msg_id, "delivered")
    assert delivered["status"] == "delivered"

    again = yrdx("dlq", "replay", "--config", config, "--id", msg_id)
    assert again.returncode == 0, again.stderr
    deadline = time.monotonic() + 30
    while True:
        records = await read_audit_records(kafka.bootstrap_servers, timeout_s=15)
        mine = [r for r in records if r["region"] == "ZJ" and r["message_id"] == msg_id]
        stages = [r["stage"] for r in mine]
        if stages.count("replayed") >= 2 and "duplicate" in [r["detail"].get("reason") for r in mine]:
            break
        assert time.monotonic() < deadline, stages
        await asyncio.sleep(0.5)
    assert stages.count("delivered") == 1  # the second replay was refused as a duplicate
    assert exchange.sink.ids("ZJ").count(msg_id) == 1
