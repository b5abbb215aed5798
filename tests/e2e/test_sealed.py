"""Personal data travels sealed: Kafka carries only the JWE, signed in that form; the destination gateway verifies
first, opens second, validates, and hands its platform the opened payload with the exact signed bytes as
evidence."""

from __future__ import annotations

import base64
import copy

import orjson

from gateway.crypto.jws import parse_detached, verify_detached
from gateway.crypto.keyfiles import load_certificate
from gateway.schemas.registry import SchemaRegistry
from tests.conftest import SEALED_TYPE, Exchange4

REGISTRY = SchemaRegistry.load()


def identity_request() -> dict[str, object]:
    payload = copy.deepcopy(REGISTRY.examples(SEALED_TYPE)[0])
    payload.pop("id_hash", None)
    payload["id_number"] = "320506199007181520"  # DOMAIN.md synthetic JS resident
    return payload


async def test_a_sealed_message_is_opened_for_the_webhook_platform_only(exchange: Exchange4) -> None:
    payload = identity_request()
    status, doc = await exchange.clients["JS"].send(SEALED_TYPE, "SH", payload)
    assert status == 202, doc
    got = await exchange.sink.wait_for("SH", doc["id"])
    opened = got["envelope"]
    assert opened["payload"] == payload and opened["id"] == doc["id"]
    signed = base64.b64decode(opened["envelope"])  # the exact bytes that travelled on Kafka
    travelled = orjson.loads(signed)
    assert "payload" not in travelled and travelled["sealed"].count(".") == 4
    assert b"320506199007181520" not in signed and "张".encode() not in signed
    js = load_certificate(exchange.exchange.pki.gateway_cert("JS"))
    assert verify_detached(parse_detached(opened["signature"]), signed, js.public_key())
    final = await exchange.clients["JS"].wait_status(doc["id"], "delivered")
    assert final["status"] == "delivered"


async def test_a_sealed_message_is_opened_in_the_pull_inbox(exchange: Exchange4) -> None:
    payload = identity_request()
    status, doc = await exchange.clients["JS"].send(SEALED_TYPE, "AH", payload)
    assert status == 202, doc
    for _ in range(60):
        found = [m for m in await exchange.clients["AH"].pull(wait=0.5) if m["id"] == doc["id"]]
        if found:
            break
    assert found, "never reached the AH inbox"
    assert found[0]["payload"] == payload and "sealed" in found[0]["envelope"]
