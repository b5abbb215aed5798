"""The national suite end to end: an exchange made by `yrdx init --alg SM2SM3` (SM2 root, SM2 gateway keys, SM2
encryption keys) runs beside the session's ES256 exchange on the same broker, in its own namespace. Its gateways
sign with SM2 (batch trees hashed with SM3), seal with SM2 + SM4-GCM, verify, open, deliver and receipt; a
flipped byte is dead-lettered; its audit trail, checkpoints signed with SM2, verifies."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from gateway.audit.model import parse_segment
from gateway.crypto.jws import b64url_decode, parse_detached, verify_detached
from gateway.crypto.keyfiles import load_certificate
from gateway.crypto.keys import public_key_of
from gateway.crypto.sm2 import is_sm2_certificate
from gateway.kafka.reader import read_topic
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.headers import SIGNATURE as SIGNATURE_HEADER
from tests._util import SideExchange, pull_until, side_exchange, yrdx
from tests.conftest import SEALED_TYPE, Broker

REGISTRY = SchemaRegistry.load()
REGIONS = ("JS", "SH")  # SH's platform pulls (yrdx init's default delivery)
ID_NUMBER = "320506199007181520"  # DOMAIN.md synthetic JS resident


@pytest_asyncio.fixture(scope="module")
async def gm(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("gm-exchange"),
                             f"gm-{uuid.uuid4().hex[:8]}", REGIONS, "--alg", "SM2SM3") as ex:
        yield ex


def identity_request() -> dict[str, object]:
    payload = copy.deepcopy(REGISTRY.examples(SEALED_TYPE)[0])
    payload.pop("id_hash", None)
    payload["id_number"] = ID_NUMBER
    return payload


def jose_header(compact: str) -> dict[str, object]:
    return orjson.loads(b64url_decode(compact.split(".")[0]))  # type: ignore[no-any-return]


async def inbox_record(kafka: Broker, topic: str, msg_id: str) -> tuple[bytes, dict[str, bytes]]:
    for r in await read_topic(kafka.bootstrap_servers, topic, 30.0):
        if orjson.loads(r.value).get("id") == msg_id:
            return r.value, dict(r.headers)
    raise AssertionError(f"{msg_id} is not on {topic}")


async def test_a_sealed_message_travels_under_sm2_and_sm4(gm: SideExchange, kafka: Broker) -> None:
    pki = gm.exchange.pki
    assert is_sm2_certificate(load_certificate(pki.ca_cert))
    payload = identity_request()
    status, doc = await gm.clients["JS"].send(SEALED_TYPE, "SH", payload)
    assert status == 202, doc
    pulled = [m for m in await pull_until(gm.clients["SH"], doc["id"]) if m["id"] == doc["id"]]
    assert pulled[0]["payload"] == payload  # opened for the platform

    raw, headers = await inbox_record(kafka, gm.topics.inbox("SH"), doc["id"])
    sealed = orjson.loads(raw)["sealed"]
    assert jose_header(sealed)["alg"] == "SM2" and jose_header(sealed)["enc"] == "SM4GCM"
    assert ID_NUMBER.encode() not in raw and "payload" not in orjson.loads(raw)
    signature = parse_detached(headers[SIGNATURE_HEADER].decode())
    assert signature.alg == "SM2SM3"
    js = load_certificate(pki.gateway_cert("JS"))
    assert verify_detached(signature, raw, public_key_of(js))
    assert (await gm.clients["JS"].wait_status(doc["id"], "delivered"))["status"] == "delivered"  # SM2 receipt


async def test_a_batch_is_signed_once_over_an_sm3_tree(gm: SideExchange, kafka: Broker) -> None:
    items = [{"type": "license.verify.request", "to": "SH",
              "payload": REGISTRY.examples("license.verify.request")[0]} for _ in range(5)]
    status, doc = await gm.clients["JS"].post("/v1/messages/batch", {"messages": items})
    assert status == 207, doc
    ids = [r["id"] for r in doc["results"]]
    pulled: set[str] = set()
    for i in ids:
        if i not in pulled:
            pulled |= {m["id"] for m in await pull_until(gm.clients["SH"], i)}
    assert set(ids) <= pulled
    signatures = {(await inbox_record(kafka, gm.topics.inbox("SH"), i))[1][SIGNATURE_HEADER].decode() for i in ids}
    assert len({s.split("~")[0] for s in signatures}) == 1
    assert all(parse_detached(s).header["yrdx-tree"] == {"hash": "SM3", "size": 5} for s in signatures)


async def test_a_flipped_byte_under_sm2_is_dead_lettered(gm: SideExchange, kafka: Broker) -> None:
    status, doc = await gm.clients["JS"].send("license.verify.request", "SH",
                                              REGISTRY.examples("license.verify.request")[0])
    assert status == 202, doc
    await pull_until(gm.clients["SH"], doc["id"])
    raw, headers = await inbox_record(kafka, gm.topics.inbox("SH"), doc["id"])
    i = raw.index(b"use_cause") + 14
    tampered = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(gm.topics.inbox("SH"), tampered, key=b"test",
                                     headers=[(SIGNATURE_HEADER, headers[SIGNATURE_HEADER])])
    finally:
        await producer.stop()
    for _ in range(60):
        letters = [dict(r.headers) for r in await read_topic(kafka.bootstrap_servers, gm.topics.dlq("SH"), 5.0)
                   if r.value == tampered]
        if letters:
            break
        await asyncio.sleep(0.5)
    assert letters and letters[0]["yrdx-reason"] == b"bad_signature"


async def test_the_sm2_audit_trail_verifies(gm: SideExchange, kafka: Broker) -> None:
    status, doc = await gm.clients["JS"].send("license.verify.request", "SH",
                                              REGISTRY.examples("license.verify.request")[0])
    assert status == 202, doc
    await pull_until(gm.clients["SH"], doc["id"])
    done = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(gm.exchange.config_path("JS")), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    assert set(report["regions"]) == set(REGIONS)
    # the checkpoints that hold the trail together are SM2 signatures
    segments = [parse_segment(r.value) for r in await read_topic(kafka.bootstrap_servers, gm.topics.audit, 30.0)]
    assert segments and {parse_detached(s.checkpoint.jws).alg for s in segments} == {"SM2SM3"}
