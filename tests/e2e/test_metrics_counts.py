"""A known exchange, counted exactly: a side exchange of its own (fresh gateways in their own namespace on the
session's broker) relays five messages JS -> SH, refuses one at ingress, and dead-letters two records written
straight to SH's inbox; each gateway's /metrics shows exactly those numbers, per region pair and reason."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from gateway.schemas.registry import SchemaRegistry
from gateway.wire import envelope
from tests._util import PlatformClient, SideExchange, pull_until, side_exchange
from tests.conftest import Broker

TYPE = "license.verify.request"
PAYLOAD = SchemaRegistry.load().examples(TYPE)[0]


@pytest_asyncio.fixture
async def side(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("counted"),
                             f"counted-{uuid.uuid4().hex[:8]}", ("JS", "SH")) as ex:
        yield ex


async def samples(ex: SideExchange, client: PlatformClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    token = (ex.exchange.dir / "secrets" / "metrics.token").read_text().strip()
    async with client.session.get(client.gateway.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_each_gateway_counts_exactly_what_it_relayed_refused_and_dead_lettered(
        kafka: Broker, side: SideExchange) -> None:
    js, sh = side.clients["JS"], side.clients["SH"]
    ids = []
    for _ in range(5):
        status, doc = await js.send(TYPE, "SH", copy.deepcopy(PAYLOAD))
        assert status == 202, doc
        ids.append(doc["id"])
    status, doc = await js.send(TYPE, "SH", {"nothing": "valid"})
    assert status == 400 and doc["code"] == "schema_violation"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(side.topics.inbox("SH"), b"not json", key=b"x")
        _, unsigned = envelope.build(msg_type=TYPE, schema_version=1, sender="JS", recipient="SH",
                                     payload=copy.deepcopy(PAYLOAD))
        await producer.send_and_wait(side.topics.inbox("SH"), unsigned, key=b"x")
    finally:
        await producer.stop()
    pulled: set[str] = set()
    for msg_id in ids:  # five conversations on up to four partitions: they may arrive in any order
        if msg_id not in pulled:
            pulled |= {m["id"] for m in await pull_until(sh, msg_id)}
    assert pulled == set(ids)
    for msg_id in ids:
        assert (await js.wait_status(msg_id, "delivered"))["status"] == "delivered"
    deadline = time.monotonic() + 30
    while True:
        at_sh = await samples(side, sh)
        if value(at_sh, "yrdx_dead_letters_total", reason="bad_signature", peer="JS") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    at_js = await samples(side, js)

    assert value(at_js, "yrdx_messages_total", direction="out", peer="SH", family="license", outcome="accepted") == 5
    assert value(at_js, "yrdx_requests_refused_total", code="schema_violation") == 1
    assert value(at_js, "yrdx_receipts_received_total", outcome="delivered") == 5
    assert value(at_sh, "yrdx_messages_total", direction="in", peer="JS", family="license", outcome="delivered") == 5
    assert value(at_sh, "yrdx_messages_total", direction="in", peer="JS", family="license", outcome="rejected") == 1
    assert value(at_sh, "yrdx_messages_total", direction="in", peer="unknown", family="other",
                 outcome="rejected") == 1
    assert value(at_sh, "yrdx_dead_letters_total", reason="bad_signature", peer="JS") == 1
    assert value(at_sh, "yrdx_dead_letters_total", reason="invalid_envelope", peer="unknown") == 1
    assert sum(v for (n, _), v in at_sh.items() if n == "yrdx_dead_letters_total") == 2
    assert value(at_sh, "yrdx_end_to_end_seconds_count", peer="JS", family="license") == 5
    assert value(at_js, "yrdx_stage_seconds_count", stage="sign") >= 1
    assert value(at_sh, "yrdx_stage_seconds_count", stage="verify") >= 5
