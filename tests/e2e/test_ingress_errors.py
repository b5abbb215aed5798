"""Bad requests get a precise problem+json answer and nothing is sent."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import re
import time
from typing import Any

import orjson
import pytest

from gateway.crypto.jws import parse_detached, verify_detached
from gateway.crypto.keyfiles import load_certificate
from gateway.crypto.keys import public_key_of
from gateway.dev.exchange import platform_id
from gateway.http.auth import TokenMinter
from gateway.schemas.registry import SchemaRegistry
from tests._util import with_use_context
from tests.conftest import Exchange4

REGISTRY = SchemaRegistry.load()


def example(msg_type: str) -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(msg_type)[0])


def b64(doc: dict[str, Any] | bytes) -> str:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(exchange: Exchange4, region: str = "JS", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": platform_id(region), "aud": f"urn:yrdx:gateway:{region}", "iat": now, "exp": now + 60,
            "jti": f"t-{time.monotonic_ns()}", **over}


async def post_with_auth(exchange: Exchange4, authorization: str | None) -> tuple[int, dict[str, Any]]:
    client = exchange.clients["JS"]
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = with_use_context({"type": "license.verify.request", "to": "ZJ",
                             "payload": example("license.verify.request")})
    async with client.session.post(client.gateway.url + "/v1/messages", data=orjson.dumps(body), headers=headers) as r:
        assert r.headers["Content-Type"].startswith("application/problem+json") or r.status == 202
        return r.status, orjson.loads(await r.read())


def hs256_with_public_key(exchange: Exchange4) -> str:
    """The classic key-confusion attack: an HS256 token keyed with the platform's *public* key."""
    secret = exchange.exchange.pki.platform_pub("JS").read_bytes()
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims(exchange))}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


@pytest.mark.parametrize("case", ["missing", "garbage", "expired", "wrong_audience", "alg_none", "hs256_public_key",
                                  "too_long_lived", "unknown_issuer"])
async def test_bad_tokens_are_refused_with_401(exchange: Exchange4, case: str) -> None:
    pki = exchange.exchange.pki
    minter = TokenMinter(platform_id("JS"), pki.platform_key("JS"), "JS")
    token: str | None
    if case == "missing":
        token = None
    elif case == "garbage":
        token = "Bearer not.a.token"
    elif case == "expired":
        token = f"Bearer {minter.mint(lifetime_s=-30)}"
    elif case == "wrong_audience":
        token = f"Bearer {TokenMinter(platform_id('JS'), pki.platform_key('JS'), 'SH').mint()}"
    elif case == "alg_none":
        token = f"Bearer {b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(exchange))}."
    elif case == "hs256_public_key":
        token = f"Bearer {hs256_with_public_key(exchange)}"
    elif case == "too_long_lived":
        token = f"Bearer {minter.mint(lifetime_s=3600)}"
    else:  # a key the gateway does not know, claiming another id
        token = f"Bearer {TokenMinter('js-rogue', pki.platform_key('JS'), 'JS').mint()}"
    status, doc = await post_with_auth(exchange, token)
    assert status == 401, doc
    assert doc["code"] == "unauthenticated"


async def test_a_token_cannot_be_used_twice(exchange: Exchange4) -> None:
    minter = TokenMinter(platform_id("JS"), exchange.exchange.pki.platform_key("JS"), "JS")
    token = f"Bearer {minter.mint()}"
    first, _ = await post_with_auth(exchange, token)
    second, doc = await post_with_auth(exchange, token)
    assert first == 202
    assert second == 401 and "replay" in doc["detail"]


async def test_schema_violation_lists_json_pointers(exchange: Exchange4) -> None:
    payload = example("medical.settlement.request")
    del payload["psn_no"]
    payload["medfee_sumamt"] = 356.8  # money must be a decimal string, never a float
    status, doc = await exchange.clients["SH"].send("medical.settlement.request", "AH", payload)
    assert status == 400 and doc["code"] == "schema_violation"
    pointers = {e["pointer"] for e in doc["errors"]}
    assert {"/psn_no", "/medfee_sumamt"} <= pointers


async def test_bad_check_digit_is_refused(exchange: Exchange4) -> None:
    payload = example("identity.verify.request")
    payload.pop("id_hash", None)
    payload["id_number"] = "320506199007181529"  # DOMAIN.md: bad check digit
    status, doc = await exchange.clients["SH"].send("identity.verify.request", "JS", payload)
    assert status == 400 and doc["code"] == "schema_violation"
    assert any(e["pointer"] == "/id_number" for e in doc["errors"]), doc
    assert "320506199007181529" not in json.dumps(doc)  # the refused value is not echoed back


async def test_bad_licence_identifier_check_character_is_refused(exchange: Exchange4) -> None:
    payload = example("license.verify.request")
    payload["license_id"] = (
        "1.2.156.3005.2.11100000000013661B006.113700000045046442.209FA4E88F9E4C878F3E9BED2CE7EA49.001.M"
    )
    payload.pop("license_type_code", None)
    payload.pop("license_number", None)
    status, doc = await exchange.clients["JS"].send("license.verify.request", "ZJ", payload)
    assert status == 400 and doc["code"] == "schema_violation"
    assert any(e["pointer"] == "/license_id" for e in doc["errors"]), doc


async def test_invalid_json_is_refused(exchange: Exchange4) -> None:
    status, doc = await exchange.clients["JS"].post("/v1/messages", None, raw=b'{"type": "license.verify.request",')
    assert status == 400 and doc["code"] == "invalid_json"


async def test_oversize_body_is_refused_with_413(exchange: Exchange4) -> None:
    payload = example("license.verify.request")
    payload["use_cause"] = "x" * 400_000
    status, doc = await exchange.clients["JS"].send("license.verify.request", "ZJ", payload)
    assert status == 413 and doc["code"] == "too_large"


async def test_type_the_platform_may_not_send_is_refused_with_403(exchange: Exchange4) -> None:
    status, doc = await exchange.clients["JS"].send("yrdx.receipt", "ZJ", example("yrdx.receipt"))
    assert status == 403 and doc["code"] == "not_permitted"


@pytest.mark.parametrize("to", ["BJ", "sh", "JS"])
async def test_unknown_or_own_region_is_refused_with_404(exchange: Exchange4, to: str) -> None:
    status, doc = await exchange.clients["JS"].send("license.verify.request", to, example("license.verify.request"))
    assert status == 404 and doc["code"] == "unknown_region"


async def test_unknown_type_is_refused(exchange: Exchange4) -> None:
    status, doc = await exchange.clients["JS"].send("license.teleport.request", "ZJ", {})
    assert status == 400 and doc["code"] == "unknown_type"


async def test_idempotency_key_returns_the_same_message_and_sends_it_once(exchange: Exchange4) -> None:
    client = exchange.clients["JS"]
    key = {"Idempotency-Key": f"idem-{time.monotonic_ns()}"}
    payload = example("license.verify.request")
    s1, d1 = await client.send("license.verify.request", "ZJ", payload, headers=key)
    s2, d2 = await client.send("license.verify.request", "ZJ", payload, headers=key)
    assert s1 == s2 == 202 and d1["id"] == d2["id"]
    await exchange.sink.wait_for("ZJ", d1["id"])
    final = await client.wait_status(d1["id"], "delivered")
    assert final["status"] == "delivered"
    assert exchange.sink.ids("ZJ").count(d1["id"]) == 1
    payload["use_cause"] = "另一个事由"
    s3, d3 = await client.send("license.verify.request", "ZJ", payload, headers=key)
    assert s3 == 409 and d3["code"] == "idempotency_conflict"


async def test_batch_answers_each_message_on_its_own(exchange: Exchange4) -> None:
    good = {"type": "medical.clearing.statement", "to": "AH", "payload": example("medical.clearing.statement")}
    bad = copy.deepcopy(good)
    bad["payload"]["medfee_sumamt"] = "12.345"
    status, doc = await exchange.clients["SH"].post("/v1/messages/batch", {"messages": [good, bad, good]})
    assert status == 207
    assert [r["status"] for r in doc["results"]] == [202, 400, 202]
    assert doc["results"][1]["code"] == "schema_violation"
    assert doc["accepted"] == 2 and doc["rejected"] == 1


async def test_batch_over_the_limit_is_refused(exchange: Exchange4) -> None:
    good = {"type": "medical.clearing.statement", "to": "AH", "payload": example("medical.clearing.statement")}
    status, doc = await exchange.clients["SH"].post("/v1/messages/batch", {"messages": [good] * 501})
    assert status == 413 and doc["code"] == "too_large", doc


async def test_health_probes_need_no_token_but_metrics_do(exchange: Exchange4) -> None:
    client = exchange.clients["SH"]
    async with client.session.get(client.gateway.url + "/healthz") as r:
        assert r.status == 200
    async with client.session.get(client.gateway.url + "/readyz") as r:
        assert r.status == 200 and (await r.json())["ready"] is True
    async with client.session.get(client.gateway.url + "/metrics") as r:
        assert r.status == 401
    token = (exchange.exchange.dir / "secrets" / "metrics.token").read_text().strip()
    async with client.session.get(client.gateway.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
        assert r.status == 200 and "yrdx_messages_total" in text
    async with client.session.get(client.gateway.url + "/v1/inbox") as r:
        assert r.status == 401


async def test_concurrent_retries_with_one_idempotency_key_send_one_message(exchange: Exchange4) -> None:
    # Single messages are signed together with the other requests in flight, so a request waits for its
    # signature: a retry arriving meanwhile must still get the same message, not a second one.
    client = exchange.clients["JS"]
    key = {"Idempotency-Key": f"idem-race-{time.monotonic_ns()}"}
    payload = example("license.verify.request")
    answers = await asyncio.gather(*(client.send("license.verify.request", "ZJ", payload, headers=key)
                                     for _ in range(8)))
    assert {s for s, _ in answers} == {202}
    ids = {d["id"] for _, d in answers}
    assert len(ids) == 1
    (msg_id,) = ids
    await exchange.sink.wait_for("ZJ", msg_id)
    assert (await client.wait_status(msg_id, "delivered"))["status"] == "delivered"
    await asyncio.sleep(0.5)
    assert exchange.sink.ids("ZJ").count(msg_id) == 1


async def signatures_so_far(client: Any, token: str) -> tuple[float, float]:
    """(signatures made, messages they covered) at the gateway, from yrdx_signature_batch_messages."""
    async with client.session.get(client.gateway.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    count = re.search(r"^yrdx_signature_batch_messages_count (\S+)$", text, re.MULTILINE)
    total = re.search(r"^yrdx_signature_batch_messages_sum (\S+)$", text, re.MULTILINE)
    assert count and total, text[:500]
    return float(count.group(1)), float(total.group(1))


async def test_concurrent_single_messages_are_signed_together_and_all_delivered(exchange: Exchange4) -> None:
    client = exchange.clients["JS"]
    token = (exchange.exchange.dir / "secrets" / "metrics.token").read_text().strip()
    signatures_before, messages_before = await signatures_so_far(client, token)
    answers = await asyncio.gather(*(client.send("license.verify.request", "ZJ", example("license.verify.request"))
                                     for _ in range(30)))
    assert {s for s, _ in answers} == {202}
    ids = [d["id"] for _, d in answers]
    deliveries = [await exchange.sink.wait_for("ZJ", i) for i in ids]
    js = load_certificate(exchange.exchange.pki.gateway_cert("JS"))
    for d in deliveries:
        assert verify_detached(parse_detached(d["signature"]), d["signed"], public_key_of(js))
    # Thirty requests in flight at once: some shared a batch signature (29 or 30 of them, here) ...
    assert any("~" in d["signature"] for d in deliveries)
    # ... and operators see it on /metrics: the thirty messages took fewer than thirty signatures.
    signatures_after, messages_after = await signatures_so_far(client, token)
    assert messages_after - messages_before == 30
    assert signatures_after - signatures_before < 30
    for i in ids:
        assert (await client.wait_status(i, "delivered"))["status"] == "delivered"
