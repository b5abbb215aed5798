"""A forged chain written to the audit topic before the genuine records does not hide them from `yrdx audit
trace`: on the real broker, a segment claiming JS's next sequence numbers (chained onto JS's real head, under
JS's real JWS header, over a signature that is not JS's) is published first; then JS sends a message. The trace
holds JS's genuine records of it, and reports the forged segment as a conflict at those places.

Non-disruptive: it runs in a side exchange of its own namespace (tests/_util.side_exchange), so the forged
segment lands on that exchange's audit topic, which no other test verifies.
"""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from gateway.audit.model import GENESIS, record_hash
from gateway.config import load_config
from gateway.crypto.jws import Signer, b64url_encode
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.kafka.reader import read_topic
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.envelope import utc_timestamp
from tests._util import SideExchange, pull_until, side_exchange, yrdx
from tests.conftest import Broker

MSG_TYPE = "license.verify.request"
PAYLOAD = SchemaRegistry.load().examples(MSG_TYPE)[0]
FORGED_RECORDS = 40  # more places than JS can fill between reading its head and sending the message


@pytest_asyncio.fixture
async def side(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    namespace = f"forge-{uuid.uuid4().hex[:8]}"  # unique per run, also on an external cluster
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("forge-exchange"), namespace,
                             ("JS", "SH")) as ex:
        yield ex


async def js_head(kafka: Broker, topic: str) -> tuple[int, str]:
    """JS's last seq and hash on the audit topic (the genesis while JS has published nothing yet)."""
    segments = [orjson.loads(r.value) for r in await read_topic(kafka.bootstrap_servers, topic, 30.0)]
    js = [s["checkpoint"] for s in segments if s["region"] == "JS"]
    return (js[-1]["seq"], js[-1]["hash"]) if js else (0, GENESIS)


def js_header(side: SideExchange) -> str:
    """The protected header of JS's checkpoints: alg, kid and x5t#S256, all public (any JS checkpoint on the topic
    shows it). Made here with JS's signer only because JS may not have published one yet."""
    pki = side.exchange.pki
    signer = Signer(load_private_key(pki.gateway_key("JS")), load_certificate(pki.gateway_cert("JS")))
    return signer.sign(b"").split("..", 1)[0]


def forged_segment(head: tuple[int, str], header: str) -> bytes:
    """JS's next FORGED_RECORDS seqs, chained onto its real head: every hash holds, only the signature lies."""
    (seq, prev), records = head, []
    for seq in range(head[0] + 1, head[0] + 1 + FORGED_RECORDS):
        body = {"seq": seq, "region": "JS", "message_id": "", "correlation_id": "", "stage": "checkpoint",
                "at": utc_timestamp(), "envelope_sha256": None, "detail": {}, "prev_hash": prev}
        body["hash"] = prev = record_hash(prev, body)
        records.append(body)
    jws = f"{header}..{b64url_encode(os.urandom(64))}"  # 64 bytes, as long as an ES256 signature
    return orjson.dumps({"region": "JS", "records": records, "checkpoint": {"seq": seq, "hash": prev, "jws": jws}})


async def publish(kafka: Broker, topic: str, value: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=b"JS")
    finally:
        await producer.stop()
    return int(meta.offset)


async def test_a_forged_segment_published_first_leaves_the_genuine_records_in_the_trace(
        kafka: Broker, side: SideExchange, tmp_path: Path) -> None:
    audit = side.topics.audit
    config = side.exchange.config_path("SH")
    assert load_config(config).topics.audit == audit
    head = await js_head(kafka, audit)
    offset = await publish(kafka, audit, forged_segment(head, js_header(side)))
    forged_seqs = range(head[0] + 1, head[0] + 1 + FORGED_RECORDS)

    status, doc = await side.clients["JS"].send(MSG_TYPE, "SH", copy.deepcopy(PAYLOAD))
    assert status == 202, doc
    msg = doc["id"]
    await pull_until(side.clients["SH"], msg)
    assert (await side.clients["JS"].wait_status(msg, "delivered"))["status"] == "delivered"
    await asyncio.sleep(0.5)  # JS's periodic flush (0.2 s) of the receipt's records

    db = tmp_path / "audit-index.sqlite"
    done = await asyncio.to_thread(yrdx, "audit", "trace", msg, "--config", str(config), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    trace = orjson.loads(done.stdout)
    mine = {(r["region"], r["stage"]) for r in trace["records"] if r["message_id"] == msg}
    assert {("JS", "accepted"), ("JS", "published"), ("SH", "received"), ("SH", "verified"), ("SH", "delivered"),
            ("JS", "receipt_received")} <= mine, trace["records"]
    assert all(r["region"] != "JS" or r["stage"] != "checkpoint" or r["seq"] not in forged_seqs
               for r in trace["records"])  # no forged record among them
    accepted = next(r for r in trace["records"] if r["message_id"] == msg and r["stage"] == "accepted")
    assert accepted["seq"] in forged_seqs  # the place the forger took first

    conflicts = trace["conflicts"]
    assert conflicts, "the forged records at the trace's places are not reported"
    assert {(c["region"], c["kind"], c["offset"]) for c in conflicts} == {("JS", "forged", offset)}
    assert accepted["seq"] in {c["seq"] for c in conflicts}
    assert all(c["reason"] == "checkpoint signature does not verify" for c in conflicts)
    assert f"{len(conflicts)} records on {audit} that touch this trace are not their region's own" in done.stderr

    # The table says it too, and `yrdx audit verify` names the same segment forged.
    table = await asyncio.to_thread(yrdx, "audit", "trace", msg, "--config", str(config), "--db", str(db),
                                    "--no-update")
    assert table.returncode == 0 and "CONFLICTS: " in table.stdout, table.stdout
    verified = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(config), "--json")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    faults = {(f["region"], f["seq"], f["kind"]) for f in orjson.loads(verified.stdout)["faults"]}
    assert ("JS", forged_seqs[-1], "forged") in faults
