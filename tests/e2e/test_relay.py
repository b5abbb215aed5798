"""Each family end to end through real gateway processes and the real broker: request and result, with the
signed receipt back at the origin, across three different region pairs and both delivery modes."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from gateway.crypto.jws import parse_detached, verify_detached
from gateway.crypto.keyfiles import load_certificate
from gateway.dev.exchange import SEALED_BY_DEFAULT
from gateway.schemas.registry import SchemaRegistry
from tests.conftest import REFUSED_TYPE, WEBHOOK_REGIONS, Exchange4

REGISTRY = SchemaRegistry.load()


def example(msg_type: str) -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(msg_type)[0])


async def relay(ex: Exchange4, sender: str, recipient: str, msg_type: str, correlation_id: str | None = None
                ) -> dict[str, Any]:
    """Send one message and return what the recipient platform got, checking the origin's receipt."""
    extra = {"correlation_id": correlation_id} if correlation_id else {}
    status, doc = await ex.clients[sender].send(msg_type, recipient, example(msg_type), **extra)
    assert status == 202, doc
    msg_id = doc["id"]
    if recipient in WEBHOOK_REGIONS:
        got = await ex.sink.wait_for(recipient, msg_id)
        body, signature, payload = got["signed"], got["signature"], got["envelope"]["payload"]
    else:
        body = signature = None
        for _ in range(60):
            for m in await ex.clients[recipient].pull(wait=0.5):
                if m["id"] == msg_id:
                    body, signature = orjson.dumps(m["envelope"]), m["signature"]
                    payload = m.get("payload", m["envelope"].get("payload"))  # opened if it travelled sealed
            if body is not None:
                break
        assert body is not None, f"{msg_id} never reached the {recipient} inbox"
    envelope = orjson.loads(body)
    assert envelope["id"] == msg_id and envelope["from"] == sender and envelope["to"] == recipient
    assert payload == example(msg_type)
    # Personal data never travels in clear: the types that carry it are sealed by default.
    assert ("sealed" in envelope) == (msg_type in SEALED_BY_DEFAULT)
    # The recipient platform can check the sender gateway's signature itself.
    sender_cert = load_certificate(ex.exchange.pki.gateway_cert(sender))
    if recipient in WEBHOOK_REGIONS:
        assert verify_detached(parse_detached(signature), body, sender_cert.public_key())
    # The origin sees the signed receipt of the destination.
    final = await ex.clients[sender].wait_status(msg_id, "delivered")
    assert final["status"] == "delivered", final
    assert final["receipt"]["by"] == recipient and final["receipt"]["outcome"] == "delivered"
    assert final["receipt"]["envelope_sha256"] == final["envelope_sha256"]
    stages = [h["stage"] for h in final["history"]]
    assert stages[0] == "accepted" and {"published", "delivered"} <= set(stages)
    return envelope


async def test_medical_settlement_conversation_between_anhui_and_shanghai(exchange: Exchange4) -> None:
    filing = await relay(exchange, "AH", "SH", "medical.filing.request")
    conv = filing["correlation_id"]
    await relay(exchange, "SH", "AH", "medical.filing.result", conv)
    await relay(exchange, "SH", "AH", "medical.settlement.request", conv)
    await relay(exchange, "AH", "SH", "medical.settlement.result", conv)
    await relay(exchange, "SH", "AH", "medical.reversal", conv)
    await relay(exchange, "SH", "AH", "medical.clearing.statement")
    await relay(exchange, "AH", "SH", "medical.clearing.confirm")


async def test_license_verification_and_revocation_between_jiangsu_and_zhejiang(exchange: Exchange4) -> None:
    req = await relay(exchange, "JS", "ZJ", "license.verify.request")
    await relay(exchange, "ZJ", "JS", "license.verify.result", req["correlation_id"])
    await relay(exchange, "ZJ", "JS", "license.status.notice")
    await relay(exchange, "JS", "ZJ", "license.commitment.record")
    await relay(exchange, "ZJ", "JS", "license.commitment.verification")


async def test_identity_verification_between_shanghai_and_jiangsu(exchange: Exchange4) -> None:
    req = await relay(exchange, "SH", "JS", "identity.verify.request")
    await relay(exchange, "JS", "SH", "identity.verify.result", req["correlation_id"])


@pytest.mark.parametrize("sender,recipient", [("ZJ", "AH"), ("AH", "ZJ")])
async def test_cancellation_travels_both_ways_between_zhejiang_and_anhui(
    exchange: Exchange4, sender: str, recipient: str
) -> None:
    await relay(exchange, sender, recipient, "medical.settlement.cancel")


async def test_a_type_the_sending_region_may_not_send_comes_back_as_a_signed_rejection(exchange: Exchange4) -> None:
    """ZJ's gateway accepts it (its platform may send the type) but AH's policy refuses it from ZJ: AH dead-letters
    it as not_permitted and ZJ's platform sees the status `rejected` with AH's signed reason."""
    status, doc = await exchange.clients["ZJ"].send(REFUSED_TYPE, "AH", example(REFUSED_TYPE))
    assert status == 202, doc
    final = await exchange.clients["ZJ"].wait_status(doc["id"], "rejected")
    assert final["status"] == "rejected", final
    assert final["receipt"]["by"] == "AH" and final["receipt"]["reason"] == "not_permitted"
    assert doc["id"] not in [m["id"] for m in await exchange.clients["AH"].pull(wait=0.2)]
