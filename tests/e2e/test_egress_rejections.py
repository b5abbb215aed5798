"""Records produced straight to an inbox topic, bypassing the sending gateway: the receiving gateway verifies
everything itself and dead-letters what fails, with the reason in the headers, delivering nothing of it."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import subprocess
import sys
import time
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.pki import issue_gateway_cert, make_ca
from gateway.schemas.registry import SchemaRegistry
from gateway.wire import envelope
from gateway.wire.headers import SIGNATURE as SIGNATURE_HEADER
from gateway.wire.regions import dlq_topic, inbox_topic
from tests._util import ROOT, envelope_use_context
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()
RECEIVER = "SH"  # webhook delivery: every delivery is observable in the sink


def gateway_signer(ex: Exchange4, region: str) -> Signer:
    pki = ex.exchange.pki
    return Signer(load_private_key(pki.gateway_key(region)), load_certificate(pki.gateway_cert(region)))


def signed(signer: Signer, sender: str = "JS", msg_type: str = "license.verify.request", **kw: Any
           ) -> tuple[str, bytes, str]:
    payload = kw.pop("payload", copy.deepcopy(REGISTRY.examples(msg_type)[0]))
    msg_id, raw = envelope.build(msg_type=msg_type, schema_version=1, sender=sender, recipient=RECEIVER,
                                 payload=payload, **{**envelope_use_context(msg_type), **kw})
    return msg_id, raw, signer.sign(raw)


@pytest_asyncio.fixture(scope="module")
async def producer(kafka: Broker) -> Any:
    p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True)
    await p.start()
    yield p
    await p.stop()


async def produce(producer: AIOKafkaProducer, raw: bytes, sig: str) -> None:
    await producer.send_and_wait(inbox_topic(RECEIVER), raw, key=b"test", headers=[(SIGNATURE_HEADER, sig.encode())])


async def dead_letter(kafka: Broker, value: bytes, timeout: float = 30.0) -> dict[str, str]:
    """The headers of the DLQ record that carries exactly these bytes."""
    consumer = AIOKafkaConsumer(dlq_topic(RECEIVER), bootstrap_servers=kafka.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    if m.value == value:
                        return {k: v.decode() for k, v in m.headers}
        raise AssertionError("no dead letter for the record")
    finally:
        await consumer.stop()


async def assert_not_delivered(ex: Exchange4, msg_id: str) -> None:
    await asyncio.sleep(0.5)
    assert msg_id not in ex.sink.ids(RECEIVER)


async def test_a_flipped_byte_is_dead_lettered_as_bad_signature(exchange: Exchange4, kafka: Broker,
                                                                producer: AIOKafkaProducer) -> None:
    msg_id, raw, sig = signed(gateway_signer(exchange, "JS"))
    i = raw.index(b"use_cause") + 14
    tampered = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
    await produce(producer, tampered, sig)
    headers = await dead_letter(kafka, tampered)
    assert headers["yrdx-reason"] == "bad_signature"
    assert headers[SIGNATURE_HEADER] == sig  # the evidence travels with the dead letter
    await assert_not_delivered(exchange, msg_id)


async def test_a_record_without_signature_is_dead_lettered(exchange: Exchange4, kafka: Broker,
                                                           producer: AIOKafkaProducer) -> None:
    msg_id, raw, _ = signed(gateway_signer(exchange, "JS"))
    await producer.send_and_wait(inbox_topic(RECEIVER), raw, key=b"test")
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "bad_signature"
    await assert_not_delivered(exchange, msg_id)


async def test_a_certificate_of_another_region_is_untrusted(exchange: Exchange4, kafka: Broker,
                                                            producer: AIOKafkaProducer) -> None:
    msg_id, raw, sig = signed(gateway_signer(exchange, "ZJ"), sender="JS")  # ZJ's key claims to be JS
    await produce(producer, raw, sig)
    headers = await dead_letter(kafka, raw)
    assert headers["yrdx-reason"] == "untrusted_signer" and "ZJ" in headers["yrdx-detail"]
    await assert_not_delivered(exchange, msg_id)


async def test_a_certificate_from_an_unknown_ca_is_untrusted(exchange: Exchange4, kafka: Broker,
                                                             producer: AIOKafkaProducer) -> None:
    rogue_ca, rogue_ca_key = make_ca("rogue root")
    cert, key = issue_gateway_cert(rogue_ca, rogue_ca_key, "JS")
    msg_id, raw, sig = signed(Signer(key, cert, include_x5c=True))
    await produce(producer, raw, sig)
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "untrusted_signer"
    await assert_not_delivered(exchange, msg_id)


async def test_an_expired_certificate_of_the_real_ca_is_refused(exchange: Exchange4, kafka: Broker,
                                                               producer: AIOKafkaProducer) -> None:
    pki = exchange.exchange.pki
    now = dt.datetime.now(dt.UTC)
    cert, key = issue_gateway_cert(load_certificate(pki.ca_cert), load_private_key(pki.ca_key), "JS",
                                   not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    msg_id, raw, sig = signed(Signer(key, cert, include_x5c=True))
    await produce(producer, raw, sig)
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "certificate_expired"
    await assert_not_delivered(exchange, msg_id)


async def test_the_same_envelope_twice_is_delivered_once(exchange: Exchange4, kafka: Broker,
                                                         producer: AIOKafkaProducer) -> None:
    msg_id, raw, sig = signed(gateway_signer(exchange, "JS"))
    await produce(producer, raw, sig)
    await exchange.sink.wait_for(RECEIVER, msg_id)
    await produce(producer, raw, sig)
    headers = await dead_letter(kafka, raw)
    assert headers["yrdx-reason"] == "duplicate"
    assert exchange.sink.ids(RECEIVER).count(msg_id) == 1


async def test_an_expired_message_is_dead_lettered(exchange: Exchange4, kafka: Broker,
                                                   producer: AIOKafkaProducer) -> None:
    past = envelope.utc_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    msg_id, raw, sig = signed(gateway_signer(exchange, "JS"), expires_at=past)
    await produce(producer, raw, sig)
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "expired"
    await assert_not_delivered(exchange, msg_id)


async def test_a_signed_schema_violation_is_dead_lettered(exchange: Exchange4, kafka: Broker,
                                                          producer: AIOKafkaProducer) -> None:
    payload = copy.deepcopy(REGISTRY.examples("license.verify.request")[0])
    payload["unexpected"] = "field"
    msg_id, raw, sig = signed(gateway_signer(exchange, "JS"), payload=payload)
    await produce(producer, raw, sig)
    headers = await dead_letter(kafka, raw)
    assert headers["yrdx-reason"] == "schema_violation" and "/unexpected" in headers["yrdx-detail"]
    await assert_not_delivered(exchange, msg_id)


async def test_a_message_for_another_region_is_refused(exchange: Exchange4, kafka: Broker,
                                                       producer: AIOKafkaProducer) -> None:
    signer = gateway_signer(exchange, "JS")
    msg_id, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS", recipient="ZJ",
                                 payload=REGISTRY.examples("license.verify.request")[0])
    await produce(producer, raw, signer.sign(raw))
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "wrong_destination"
    await assert_not_delivered(exchange, msg_id)


async def test_a_revoked_certificate_is_refused(exchange: Exchange4, kafka: Broker, producer: AIOKafkaProducer) -> None:
    root = exchange.exchange.dir
    revoked = Signer(load_private_key(root / "revoked-js.key"), load_certificate(root / "revoked-js.crt"),
                     include_x5c=True)
    msg_id, raw, sig = signed(revoked)
    await produce(producer, raw, sig)
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "certificate_revoked"
    await assert_not_delivered(exchange, msg_id)


async def test_a_revocation_on_the_trust_topic_reaches_the_gateways(exchange: Exchange4, kafka: Broker,
                                                                   producer: AIOKafkaProducer) -> None:
    """`yrdx trust revoke` (signed by the root CA key) makes every gateway refuse the certificate from then on."""
    pki = exchange.exchange.pki
    cert, key = issue_gateway_cert(load_certificate(pki.ca_cert), load_private_key(pki.ca_key), "JS")
    spare = Signer(key, cert, include_x5c=True)  # a second, valid JS certificate
    first_id, first, sig = signed(spare)
    await produce(producer, first, sig)
    await exchange.sink.wait_for(RECEIVER, first_id)  # trusted while not revoked

    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "trust", "revoke", "--config", str(exchange.exchange.config_path("JS")),
         f"--thumbprint={spare.thumbprint}", "--reason", "key compromise"],  # a thumbprint may begin with -
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # The gateways follow yrdx.trust: a message sent before they applied it may still get through, so send
    # until one is refused, then check that it was refused for the revocation.
    deadline = time.monotonic() + 30
    while True:
        later_id, later, sig = signed(spare)
        await produce(producer, later, sig)
        try:
            await exchange.sink.wait_for(RECEIVER, later_id, timeout=3.0)
        except AssertionError:
            break  # not delivered: it was dead-lettered
        assert time.monotonic() < deadline, "the revocation never took effect"
    assert (await dead_letter(kafka, later))["yrdx-reason"] == "certificate_revoked"
    assert later_id not in exchange.sink.ids(RECEIVER)


async def test_a_sealed_payload_that_does_not_open_is_dead_lettered(exchange: Exchange4, kafka: Broker,
                                                                    producer: AIOKafkaProducer) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from gateway.crypto.seal import X25519Sealer

    wrong_key = X25519Sealer(X25519PrivateKey.generate().public_key(), RECEIVER)  # sealed for somebody else
    msg_id, raw, sig = signed(gateway_signer(exchange, "JS"), sealed=wrong_key.seal(b'{"a": 1}'))
    await produce(producer, raw, sig)
    assert (await dead_letter(kafka, raw))["yrdx-reason"] == "undecryptable"
    await assert_not_delivered(exchange, msg_id)
