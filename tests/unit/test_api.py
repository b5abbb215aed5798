"""The HTTP API over real loopback HTTP, wired to an in-process ingress and egress over the in-memory Kafka twin:
a message accepted at the API is the record on the twin's inbox topic, the pull inbox hands out what egress
delivered, and readiness tells the truth about egress progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig
from gateway.crypto.keyfiles import load_certificate
from gateway.crypto.seal import Opener
from gateway.crypto.trust import TrustStore
from gateway.http import api as api_module
from gateway.http.access_tokens import AccessTokens
from gateway.http.admission import Admission
from gateway.http.api import ADMISSION, make_runner
from gateway.http.auth import Authenticator, TokenMinter, load_public_key
from gateway.kafka.memory import MemoryPublisher
from gateway.metrics import Metrics, family
from gateway.relay.health import EgressHealth
from gateway.relay.identity import IdentityWatch
from gateway.relay.ingress import Ingress
from gateway.schemas.registry import SchemaRegistry
from gateway.state import StateStore
from gateway.wire import envelope, headers
from gateway.wire.regions import gateway_audience
from tests._util import with_use_context, with_use_contexts
from tests.unit._relay import REGION, REGISTRY, TYPE, Harness, close, harness

PLATFORM = "sh-platform"


@dataclass
class Context:
    """An ApiContext made of real parts; egress and the broker are the in-process harness."""

    cfg: GatewayConfig
    auth: Authenticator
    ingress: Ingress
    state: StateStore
    metrics: Metrics
    registry: SchemaRegistry
    trust: TrustStore
    audit_trust: TrustStore
    opener: Opener | None
    metrics_token: str | None
    broker_ok: bool
    consumer_running: bool
    egress_health: EgressHealth
    identity: IdentityWatch


@dataclass
class Api:
    h: Harness
    ctx: Context
    url: str
    session: aiohttp.ClientSession
    minter: TokenMinter
    admission: Admission

    async def call(self, method: str, path: str, body: Any = None, **hdrs: str) -> tuple[int, dict[str, Any]]:
        h = {"Authorization": f"Bearer {self.minter.mint()}", **hdrs}
        data = None if body is None else orjson.dumps(with_use_contexts(path, body))
        async with self.session.request(method, self.url + path, data=data, headers=h) as r:
            return r.status, orjson.loads(await r.read())


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    h = await harness(tmp_path)
    cfg = h.cfg
    publisher = MemoryPublisher(h.broker)
    auth = Authenticator(REGION, {PLATFORM: load_public_key(h.ex.pki.platform_pub(REGION))}, {}, h.state,
                         access=AccessTokens(REGION, b"identity key", gateway_audience(REGION)))
    ingress = Ingress(cfg, REGISTRY, h.signer(REGION), publisher, h.state, h.audit, h.metrics)
    own = h.trust.add_certificate(load_certificate(h.ex.pki.gateway_cert(REGION)))
    ctx = Context(cfg, auth, ingress, h.state, h.metrics, REGISTRY, h.trust, h.trust, None, "op-token", True, True,
                  EgressHealth(), IdentityWatch(own, h.trust, h.metrics))
    ctx.egress_health.polled()
    runner = make_runner(ctx)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield Api(h, ctx, f"http://127.0.0.1:{port}", session,
                  TokenMinter(PLATFORM, h.ex.pki.platform_key(REGION), REGION), runner.app[ADMISSION])
    await runner.cleanup()
    await close(h)


async def test_an_accepted_message_is_the_signed_record_on_the_inbox_topic(api: Api) -> None:
    status, doc = await api.call("POST", "/v1/messages", {"type": TYPE, "to": "JS",
                                                          "payload": REGISTRY.examples(TYPE)[0]})
    assert status == 202, doc
    (record,) = api.h.broker.records(api.h.cfg.topics.inbox("JS"))
    assert envelope.parse(record.value).id == doc["id"] and record.key == doc["correlation_id"].encode()
    assert headers.SIGNATURE in record.headers
    status, sent = await api.call("GET", f"/v1/messages/{doc['id']}")
    assert status == 200 and sent["status"] == "published"


async def test_an_assertion_traded_at_v1_token_gives_a_reusable_token_that_cannot_renew_itself(api: Api) -> None:
    async with api.session.post(api.url + "/v1/token", headers=api.minter.header()) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        doc = orjson.loads(await r.read())
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 300 and doc["access_token"].startswith("yat1.")
    bearer = f"Bearer {doc['access_token']}"
    body = {"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}
    for _ in range(2):  # no jti: the same token again is not a replay
        status, sent = await api.call("POST", "/v1/messages", body, Authorization=bearer)
        assert status == 202, sent
    assert len(api.h.broker.records(api.h.cfg.topics.inbox("JS"))) == 2
    status, refused = await api.call("POST", "/v1/token", Authorization=bearer)
    assert status == 401 and refused["code"] == "unauthenticated" and "assertion only" in refused["detail"]


async def test_a_retry_with_the_same_idempotency_key_publishes_nothing_new(api: Api) -> None:
    body = {"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}
    first = await api.call("POST", "/v1/messages", body, **{"Idempotency-Key": "k-1"})
    again = await api.call("POST", "/v1/messages", body, **{"Idempotency-Key": "k-1"})
    other = await api.call("POST", "/v1/messages", {**body, "to": "ZJ"}, **{"Idempotency-Key": "k-1"})
    assert first[0] == again[0] == 202 and first[1]["id"] == again[1]["id"]
    assert other[0] == 409 and other[1]["code"] == "idempotency_conflict"
    assert len(api.h.broker.records(api.h.cfg.topics.inbox("JS"))) == 1


async def test_requests_with_one_idempotency_key_at_once_publish_one_message(api: Api) -> None:
    """Five requests with one key in the same turn of the loop: each is signed before any claims the key, and the
    claim decides: one message is published, and all five are answered with its id."""
    body = {"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}
    answers = await asyncio.gather(*(api.call("POST", "/v1/messages", body, **{"Idempotency-Key": "k-at-once"})
                                     for _ in range(5)))
    assert [status for status, _ in answers] == [202] * 5
    (record,) = api.h.broker.records(api.h.cfg.topics.inbox("JS"))
    assert {doc["id"] for _, doc in answers} == {envelope.parse(record.value).id}


async def test_the_pull_inbox_hands_out_what_egress_delivered_until_acked(api: Api) -> None:
    msg_id, _ = api.h.send("JS")
    await api.h.drain()
    status, doc = await api.call("GET", "/v1/inbox?max=10")
    assert status == 200 and [m["id"] for m in doc["messages"]] == [msg_id]
    status, acked = await api.call("POST", "/v1/inbox/ack", {"ids": [msg_id]})
    assert status == 200 and acked == {"acked": 1}


async def test_a_waiting_pull_is_woken_by_the_delivery_not_by_its_next_lease_query(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-poll that found nothing answers as soon as egress delivers (gateway/state/doorbell.py): with its
    periodic lease query pushed past its wait, only the doorbell can end it before the wait does."""
    monkeypatch.setattr(api_module, "INBOX_POLL_S", 30.0)
    pull = asyncio.create_task(api.call("GET", "/v1/inbox?max=10&wait=20"))
    await asyncio.sleep(0.2)
    assert not pull.done()
    msg_id, _ = api.h.send("JS")
    await api.h.drain()
    status, doc = await asyncio.wait_for(pull, 10)
    assert status == 200 and [m["id"] for m in doc["messages"]] == [msg_id]


async def test_readiness_turns_red_when_egress_stops_making_progress(api: Api) -> None:
    async with api.session.get(api.url + "/readyz") as r:
        assert r.status == 200
    for _ in range(3):
        api.ctx.egress_health.restarted()
    async with api.session.get(api.url + "/readyz") as r:
        doc = orjson.loads(await r.read())
        assert r.status == 503 and doc["checks"]["egress_progress"] is False
        assert doc["egress"]["recent_restarts"] == 3


async def test_an_unknown_route_is_problem_json_and_a_missing_token_is_401(api: Api) -> None:
    async with api.session.get(api.url + "/v1/nothing") as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
    async with api.session.post(api.url + "/v1/messages", data=b"{}") as r:
        assert r.status == 401 and (await r.json(content_type=None))["code"] == "unauthenticated"


async def test_a_revoked_gateway_refuses_new_messages_and_says_so_on_readyz(api: Api) -> None:
    api.h.trust.revoke(api.ctx.identity.own.thumbprint)
    assert api.ctx.identity.check() is not None
    status, doc = await api.call("POST", "/v1/messages", {"type": TYPE, "to": "JS",
                                                          "payload": REGISTRY.examples(TYPE)[0]})
    assert status == 503 and doc["code"] == "identity_revoked"
    assert api.h.broker.records(api.h.cfg.topics.inbox("JS")) == []
    async with api.session.get(api.url + "/readyz") as r:
        ready = orjson.loads(await r.read())
        assert r.status == 503 and ready["failing"] == ["identity"] and ready["identity"]["code"] == "identity_revoked"
    msg_id, _ = api.h.send("JS")  # what it has consumed is still delivered
    await api.h.drain()
    assert api.h.delivered_ids() == [msg_id]


async def test_certificate_expiry_is_a_gauge_for_own_peers_and_roots(api: Api) -> None:
    api.ctx.identity.check()
    async with api.session.get(api.url + "/metrics", headers={"Authorization": "Bearer op-token"}) as r:
        text = await r.text()
    expiry = [line for line in text.splitlines() if line.startswith("yrdx_certificate_expiry_seconds{")]
    roles = {line.split('role="')[1].split('"')[0] for line in expiry}
    assert roles == {"own", "peer", "root"} and all(float(line.split()[-1]) > 86400 for line in expiry)
    assert "process_cpu_seconds_total" in text and "yrdx_build_info{" in text


class SlowPublisher(MemoryPublisher):
    """A broker that takes `delay` seconds to acknowledge each produce call."""

    def __init__(self, broker: Any, delay: float) -> None:
        super().__init__(broker)
        self.delay = delay

    async def publish(self, records: Any) -> None:
        await asyncio.sleep(self.delay)
        await super().publish(records)


@contextlib.asynccontextmanager
async def slow_broker_gateway(h: Harness, delay: float) -> AsyncIterator[tuple[str, TokenMinter]]:
    """The gateway's API over `h`, its messages and their audit records published through a SlowPublisher:
    the POST /v1/messages URL and a platform's token minter."""
    publisher = SlowPublisher(h.broker, delay)
    audit = AuditTrail(REGION, h.signer(REGION), h.state, publisher, True, h.cfg.topics)
    auth = Authenticator(REGION, {PLATFORM: load_public_key(h.ex.pki.platform_pub(REGION))}, {}, h.state)
    ingress = Ingress(h.cfg, REGISTRY, h.signer(REGION), publisher, h.state, audit, h.metrics)
    own = h.trust.add_certificate(load_certificate(h.ex.pki.gateway_cert(REGION)))
    ctx = Context(h.cfg, auth, ingress, h.state, h.metrics, REGISTRY, h.trust, h.trust, None, None, True, True,
                  EgressHealth(), IdentityWatch(own, h.trust, h.metrics))
    runner = make_runner(ctx)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield (f"http://127.0.0.1:{runner.addresses[0][1]}/v1/messages",
               TokenMinter(PLATFORM, h.ex.pki.platform_key(REGION), REGION))
    finally:
        await runner.cleanup()
        await close(h)


async def test_overload_is_refused_at_once_with_retry_after_and_what_was_accepted_is_published(
        tmp_path: Path) -> None:
    """Admission control: with room for 3 messages in flight and a broker that takes 0.3 s to acknowledge, 20
    requests at once get 202 or 429 `overloaded` (Retry-After), never a queue; every 202 is on the topic."""
    h = await harness(tmp_path, lambda c: replace(c, limits=replace(c.limits, max_in_flight_messages=3)))
    body = orjson.dumps(with_use_context({"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}))
    async with slow_broker_gateway(h, 0.3) as (url, minter), aiohttp.ClientSession() as session:
        async def post() -> tuple[int, dict[str, Any], str | None]:
            async with session.post(url, data=body, headers={"Authorization": f"Bearer {minter.mint()}"}) as r:
                return r.status, orjson.loads(await r.read()), r.headers.get("Retry-After")
        answers = await asyncio.gather(*(post() for _ in range(20)))
        statuses = sorted(s for s, _, _ in answers)
        assert set(statuses) == {202, 429} and statuses.count(202) >= 3
        refused = [(doc, retry) for s, doc, retry in answers if s == 429]
        assert all(doc["code"] == "overloaded" and "holds" in doc["detail"] and retry == "1" for doc, retry in refused)
        accepted = {doc["id"] for s, doc, _ in answers if s == 202}
        on_topic = {envelope.parse(r.value).id for r in h.broker.records(h.cfg.topics.inbox("JS"))}
        assert on_topic == accepted
        status, _, _ = await post()  # the load is gone: accepted again at once
        assert status == 202


async def test_requests_that_would_wait_too_long_are_refused_and_what_was_accepted_is_published(
        tmp_path: Path) -> None:
    """The bound in time: room for 1,000 messages, but a broker that takes 0.3 s per produce call and requests
    that may wait 50 ms for their group. One request every 10 ms: those arriving while the head of the queue has
    waited longer get 429 `overloaded` saying so, every 202 is on the topic, and once the load is gone the next
    request is accepted at once."""
    h = await harness(tmp_path, lambda c: replace(c, limits=replace(c.limits, max_in_flight_messages=1000,
                                                                    max_queue_wait_ms=50)))
    body = orjson.dumps(with_use_context({"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}))
    async with slow_broker_gateway(h, 0.3) as (url, minter), aiohttp.ClientSession() as session:
        async def post() -> tuple[int, dict[str, Any]]:
            async with session.post(url, data=body, headers={"Authorization": f"Bearer {minter.mint()}"}) as r:
                return r.status, orjson.loads(await r.read())
        tasks, waits = [], []
        for _ in range(60):  # an offered rate, not a burst: the queue ages while they arrive
            tasks.append(asyncio.create_task(post()))
            await asyncio.sleep(0.01)
            waits.append(h.metrics.registry.get_sample_value("yrdx_ingress_queue_wait_seconds"))
        answers = await asyncio.gather(*tasks)
        assert max(waits) > 0.05  # what operators see of it
        assert h.metrics.registry.get_sample_value("yrdx_ingress_queue_wait_seconds") == 0.0
        statuses = [s for s, _ in answers]
        assert set(statuses) == {202, 429}, statuses
        refused = [doc for s, doc in answers if s == 429]
        assert all(doc["code"] == "overloaded" and "limit 50 ms" in doc["detail"] for doc in refused)
        accepted = {doc["id"] for s, doc in answers if s == 202}
        on_topic = {envelope.parse(r.value).id for r in h.broker.records(h.cfg.topics.inbox("JS"))}
        assert on_topic == accepted
        assert (await post())[0] == 202


async def test_a_full_gateway_refuses_before_verifying_the_token(api: Api) -> None:
    """While the gateway is full, a message request is answered 429 `overloaded` before its token is verified:
    the same token (its jti unspent) is accepted once there is room, and no token at all also gets the 429."""
    body = orjson.dumps(with_use_context({"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}))
    token = api.minter.mint()
    api.admission.messages = api.admission.max_messages  # what the requests in flight would hold
    try:
        for headers in ({"Authorization": f"Bearer {token}"}, {}):
            for path in ("/v1/messages", "/v1/messages/batch", "/v1/requests"):
                async with api.session.post(api.url + path, data=body, headers=headers) as r:
                    doc = orjson.loads(await r.read())
                    assert (r.status, doc["code"], r.headers.get("Retry-After")) == (429, "overloaded", "1"), path
        async with api.session.get(api.url + "/v1/messages/none", headers={}) as r:
            assert r.status == 401  # only the routes that take messages in are shed before authentication
    finally:
        api.admission.messages = 0
    async with api.session.post(api.url + "/v1/messages", data=body,
                                headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 202, await r.read()


async def test_messages_accepted_together_are_each_counted_and_timed(api: Api) -> None:
    """A group's messages are counted per destination and family at once, and each is observed in the latency
    histogram: the figures are per message, however the group was made."""
    body = {"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}
    answers = await asyncio.gather(*(api.call("POST", "/v1/messages", body) for _ in range(7)))
    assert [status for status, _ in answers] == [202] * 7
    m = api.ctx.metrics
    assert m.messages.labels("out", "JS", family(TYPE), "accepted")._value.get() == 7
    assert sum(s.value for s in m.ingress_seconds.collect()[0].samples if s.name.endswith("_count")) == 7


def _histogram(metric: Any, suffix: str, **labels: str) -> float:
    return sum(s.value for s in metric.collect()[0].samples
               if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_the_request_latency_covers_the_whole_request_once_per_accepted_message(api: Api) -> None:
    """`yrdx_ingress_request_seconds` times a request from its authentication to its answer, so it holds its
    group's publish (the broker's ack) and more; a batch's accepted messages each observe the batch's time, and
    refused ones nothing."""
    m = api.ctx.metrics
    good = {"type": TYPE, "to": "JS", "payload": REGISTRY.examples(TYPE)[0]}
    raw = orjson.dumps(with_use_contexts("/v1/messages", good))

    async def slow_body() -> AsyncIterator[bytes]:  # a platform on a slow link: its wait counts too
        yield raw[:10]
        await asyncio.sleep(0.2)
        yield raw[10:]

    async with api.session.post(api.url + "/v1/messages", data=slow_body(),
                                headers={"Authorization": f"Bearer {api.minter.mint()}"}) as r:
        assert r.status == 202, await r.read()
    assert _histogram(m.ingress_seconds, "_count") == 1
    assert _histogram(m.ingress_seconds, "_sum") >= 0.2 > _histogram(m.stage_seconds, "_sum", stage="publish") > 0
    status, doc = await api.call("POST", "/v1/messages/batch", {"messages": [good, good, {"type": TYPE}]})
    assert (status, doc["accepted"], doc["rejected"]) == (207, 2, 1)
    assert _histogram(m.ingress_seconds, "_count") == 3
    status, _ = await api.call("POST", "/v1/messages", {"type": TYPE, "to": "JS"})
    assert status == 400 and _histogram(m.ingress_seconds, "_count") == 3  # a refusal is not an acceptance
