"""Two exchanges share one Kafka cluster: a second exchange in its own `kafka.namespace` (`yrdx init --namespace`)
runs beside the session's default one on the same broker, and neither sees the other's messages, dead letters,
audit trail or consumer groups."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient

from gateway.audit.journey import read_audit_records
from gateway.config import load_config
from gateway.kafka.reader import read_topic
from gateway.schemas.registry import SchemaRegistry
from tests._util import SideExchange, pull_until, side_exchange, yrdx
from tests.conftest import Broker, Exchange4

MSG_TYPE = "license.verify.request"
PAYLOAD = SchemaRegistry.load().examples(MSG_TYPE)[0]
ALT_REGIONS = ("JS", "SH")  # just the two regions of the test; the alt SH pulls (yrdx init's default delivery)


@pytest_asyncio.fixture
async def alt(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    # Unique per run, so that a rerun against an external cluster (KAFKA_BOOTSTRAP_SERVERS) starts clean.
    namespace = f"alt-{uuid.uuid4().hex[:8]}"
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("alt-exchange"), namespace,
                             ALT_REGIONS) as ex:
        yield ex


async def envelope_ids(kafka: Broker, topic: str) -> set[str]:
    """The envelope ids on a topic. The session's inbox also holds what the hostile-input tests wrote: records the
    client library cannot decode (stepped over), and values that are no envelope (left out)."""
    ids = set()
    for r in await read_topic(kafka.bootstrap_servers, topic, 30.0, step_over=True):
        try:
            doc = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue
        if r.flaw is None and isinstance(doc, dict) and isinstance(doc.get("id"), str):
            ids.add(doc["id"])
    return ids


async def test_two_exchanges_share_one_cluster(kafka: Broker, exchange: Exchange4, alt: SideExchange) -> None:
    ns = alt.topics
    status, doc = await alt.clients["JS"].send(MSG_TYPE, "SH", copy.deepcopy(PAYLOAD))
    assert status == 202, doc
    alt_id = doc["id"]
    status, doc = await exchange.clients["JS"].send(MSG_TYPE, "SH", copy.deepcopy(PAYLOAD))
    assert status == 202, doc
    default_id = doc["id"]

    # Each lands at its own exchange's SH (alt: pull inbox; default: webhook), with the signed receipt back.
    pulled = [m["id"] for m in await pull_until(alt.clients["SH"], alt_id)]
    await exchange.sink.wait_for("SH", default_id)
    assert (await alt.clients["JS"].wait_status(alt_id, "delivered"))["status"] == "delivered"
    assert (await exchange.clients["JS"].wait_status(default_id, "delivered"))["status"] == "delivered"
    # ... and only there: not delivered across, not even offered (it would be dead-lettered: another PKI).
    assert default_id not in pulled
    assert alt_id not in exchange.sink.ids("SH")
    alt_inbox, default_inbox = await envelope_ids(kafka, ns.inbox("SH")), await envelope_ids(kafka, "yrdx.sh.inbox")
    assert alt_id in alt_inbox and default_id not in alt_inbox
    assert default_id in default_inbox and alt_id not in default_inbox
    assert alt_id not in await envelope_ids(kafka, "yrdx.sh.dlq")

    # The alt exchange's topics and consumer groups carry its prefix; the defaults keep the default names.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        groups = {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    expected = {*(ns.inbox(r) for r in ("SH", "JS", "ZJ", "AH")), *(ns.files(r) for r in ("SH", "JS", "ZJ", "AH")),
                *(ns.dlq(r) for r in ALT_REGIONS), ns.audit, ns.checkpoints, ns.trust}
    assert {t for t in topics if t.startswith(f"{ns.namespace}.")} == expected
    assert ns.audit == f"{ns.namespace}.yrdx.audit" and ns.inbox("SH") == f"{ns.namespace}.yrdx.sh.inbox"
    assert {"yrdx.sh.inbox", "yrdx.audit", "yrdx.trust", "yrdx.checkpoints"} <= topics
    assert {f"{ns.namespace}.yrdx-sh", f"{ns.namespace}.yrdx-js", "yrdx-sh", "yrdx-js"} <= groups

    # Each audit trail holds only its own exchange's messages.
    alt_kafka = load_config(alt.exchange.config_path("SH")).kafka
    assert alt_kafka.namespace == ns.namespace
    alt_trail = {r["message_id"] for r in await read_audit_records(alt_kafka, timeout_s=30)}
    default_trail = {r["message_id"] for r in await read_audit_records(kafka.bootstrap_servers, timeout_s=30)}
    assert alt_id in alt_trail and default_id not in alt_trail
    assert default_id in default_trail and alt_id not in default_trail

    # The CLI reads the namespace from the config: the alt trail verifies with the alt trust, the DLQ is empty.
    verified = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(alt.exchange.config_path("JS")),
                                       "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = orjson.loads(verified.stdout)
    assert set(report["regions"]) == set(ALT_REGIONS)
    listed = await asyncio.to_thread(yrdx, "dlq", "list", "--config", str(alt.exchange.config_path("SH")))
    assert listed.returncode == 0 and listed.stdout.strip().endswith("0 dead letter(s)"), listed.stdout

    # The auditors' HTTP trace of the alt gateway reads the alt trail.
    deadline = time.monotonic() + 30
    while True:
        code, body = await alt.clients["JS"].get(f"/v1/audit/messages/{alt_id}", auditor=True)
        if code == 200 and {"accepted", "delivered"} <= {r["stage"] for r in body["records"]}:
            break
        assert time.monotonic() < deadline, (code, body)
        await asyncio.sleep(0.3)
