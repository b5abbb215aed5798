"""Batch signatures on the wire: a batch request is signed once (a hash tree's root), each record carries its
inclusion proof, the receiver delivers every member, and a proof that does not lead from the record's bytes to
the signed root is dead-lettered as bad_signature."""

from __future__ import annotations

import copy
from typing import Any

from aiokafka import AIOKafkaProducer

from gateway.crypto.jws import b64url_decode, b64url_encode, parse_detached, verify_detached
from gateway.crypto.keyfiles import load_certificate
from gateway.crypto.keys import public_key_of
from gateway.wire import envelope
from tests._util import envelope_use_context
from tests.conftest import Broker, Exchange4
from tests.e2e.test_egress_rejections import (
    RECEIVER,
    REGISTRY,
    assert_not_delivered,
    dead_letter,
    gateway_signer,
    produce,
    producer,  # noqa: F401 (fixture)
)


def batch_of(n: int, **kw: Any) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(n):
        payload = copy.deepcopy(REGISTRY.examples("license.verify.request")[0])
        out.append(envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS",
                                  recipient=RECEIVER, payload=payload,
                                  **{**envelope_use_context("license.verify.request"), **kw}))
    return out


async def test_a_batch_request_is_signed_once_and_every_member_is_delivered(exchange: Exchange4) -> None:
    client = exchange.clients["JS"]
    items = [{"type": "license.verify.request", "to": RECEIVER,
              "payload": REGISTRY.examples("license.verify.request")[0]} for _ in range(9)]
    status, doc = await client.post("/v1/messages/batch", {"messages": items})
    assert status == 207, doc
    ids = [r["id"] for r in doc["results"]]
    deliveries = [await exchange.sink.wait_for(RECEIVER, i) for i in ids]
    assert len({d["signature"].split("~")[0] for d in deliveries}) == 1  # one JWS over the tree's root
    cert = load_certificate(exchange.exchange.pki.gateway_cert("JS"))
    for d in deliveries:
        parsed = parse_detached(d["signature"])
        assert parsed.proof is not None and parsed.proof.size == 9
        # what a platform does with the delivery: the origin's signature holds over the bytes it received
        assert verify_detached(parsed, d["signed"], public_key_of(cert))
    for i in ids:
        assert (await client.wait_status(i, "delivered"))["status"] == "delivered"


async def test_a_member_with_another_members_proof_is_dead_lettered(
    exchange: Exchange4, kafka: Broker, producer: AIOKafkaProducer  # noqa: F811
) -> None:
    members = batch_of(4)
    sigs = gateway_signer(exchange, "JS").sign_batch([raw for _, raw in members])
    (id0, raw0), (id1, raw1) = members[0], members[1]
    await produce(producer, raw1, sigs[0])  # a valid batch signature, but the proof is for member 0
    headers = await dead_letter(kafka, raw1)
    assert headers["yrdx-reason"] == "bad_signature"
    await produce(producer, raw0, sigs[0])  # the right pairing is delivered: the root's signature is good
    await exchange.sink.wait_for(RECEIVER, id0)
    await assert_not_delivered(exchange, id1)


async def test_a_tampered_member_or_proof_is_dead_lettered(
    exchange: Exchange4, kafka: Broker, producer: AIOKafkaProducer  # noqa: F811
) -> None:
    members = batch_of(3)
    sigs = gateway_signer(exchange, "JS").sign_batch([raw for _, raw in members])
    # the other members were verified first, so the receiver remembers the root: a cached root must not
    # excuse a record whose bytes changed
    await produce(producer, members[0][1], sigs[0])
    await exchange.sink.wait_for(RECEIVER, members[0][0])
    msg_id, raw = members[1]
    i = raw.index(b"use_cause") + 14
    tampered = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
    await produce(producer, tampered, sigs[1])
    assert (await dead_letter(kafka, tampered))["yrdx-reason"] == "bad_signature"
    jws, index, path = sigs[2].split("~")
    hashes = bytearray(b64url_decode(path))
    hashes[0] ^= 0x80
    msg_id2, raw2 = members[2]
    await produce(producer, raw2, f"{jws}~{index}~{b64url_encode(bytes(hashes))}")
    assert (await dead_letter(kafka, raw2))["yrdx-reason"] == "bad_signature"
    await assert_not_delivered(exchange, msg_id)
    await assert_not_delivered(exchange, msg_id2)
