"""POST /v1/requests, GET /v1/requests/{id} and facade routes (gateway/http/api.py, gateway/http/facades.py) over
real loopback HTTP, wired to request-reply over the in-memory Kafka twin (tests/unit/test_request_reply.py)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.crypto.keyfiles import load_certificate
from gateway.http.api import make_runner
from gateway.http.auth import Authenticator, TokenMinter, load_public_key
from gateway.http.facades import FacadeContext, FacadeError, load_factories, mount
from gateway.relay.health import EgressHealth
from gateway.relay.identity import IdentityWatch
from gateway.relay.requests import RequestReply
from gateway.wire.problems import Problem, ProblemError
from tests._util import with_use_context
from tests.unit._relay import REGION, REGISTRY
from tests.unit.test_api import Context
from tests.unit.test_request_reply import LICENSE, Rig, rig  # noqa: F401 (the fixture)

PLATFORM = "sh-platform"
OTHER = "sh-counter"  # a second platform of SH, not configured for the facade


@dataclass
class RequestContext(Context):
    request_reply: RequestReply


def facade_factory(ctx: FacadeContext) -> list[web.RouteDef]:
    """A facade of the kind an adapter contributes: its own body format, answered through request-reply."""

    async def ask(request: web.Request) -> web.Response:
        platform_id = ctx.authenticate_platform(request)
        body = await request.json()
        try:
            outcome = await ctx.request_reply.call(platform_id, body["message"], deadline_ms=body["deadline_ms"])
        except ProblemError as e:
            return web.json_response({"answer": "refused", "code": e.problem.code})
        return web.json_response({"answer": outcome.status, "region": ctx.region})

    async def hello(request: web.Request) -> web.Response:  # forgets to authenticate: the gateway still does
        return web.json_response({"hello": True})

    return [web.post("/ask", ask), web.get("/hello", hello)]


@dataclass
class Client:
    rig: Rig
    url: str
    session: aiohttp.ClientSession
    minters: dict[str, TokenMinter]

    async def call(self, method: str, path: str, body: Any = None, as_: str = PLATFORM,
                   **hdrs: str) -> tuple[int, dict[str, Any]]:
        h = {"Authorization": f"Bearer {self.minters[as_].mint()}", **hdrs}
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(method, self.url + path, data=data, headers=h) as r:
            return r.status, orjson.loads(await r.read())


@pytest_asyncio.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:  # noqa: F811 (the fixture above)
    h = rig.h
    platform = h.cfg.platforms[0]
    cfg = replace(h.cfg, platforms=(replace(platform, facade="demo"), replace(platform, id=OTHER)))
    key = load_public_key(h.ex.pki.platform_pub(REGION))
    auth = Authenticator(REGION, {PLATFORM: key, OTHER: key}, {}, h.state)
    own = h.trust.add_certificate(load_certificate(h.ex.pki.gateway_cert(REGION)))
    rr = rig.rr
    rr._cfg = cfg  # the request-reply of the rig, with the two platforms
    ctx = RequestContext(cfg, auth, rr._ingress, h.state, h.metrics, REGISTRY, h.trust, h.trust, None, "op-token",
                         True, True, EgressHealth(), IdentityWatch(own, h.trust, h.metrics), rr)
    routes = mount(cfg, lambda name: FacadeContext(name, rr, REGISTRY, REGION, h.metrics, h.audit, cfg),
                   {"demo": facade_factory})
    runner = make_runner(ctx, routes)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    minters = {p: TokenMinter(p, h.ex.pki.platform_key(REGION), REGION) for p in (PLATFORM, OTHER)}
    async with aiohttp.ClientSession() as session:
        yield Client(rig, f"http://127.0.0.1:{port}", session, minters)
    await runner.cleanup()


def license_request(**extra: Any) -> dict[str, Any]:
    return with_use_context({"type": LICENSE, "to": "JS", "payload": copy.deepcopy(REGISTRY.examples(LICENSE)[0]),
                             **extra})


async def test_a_request_is_held_until_its_reply_and_answers_200_with_it(client: Client) -> None:
    call = asyncio.create_task(client.call("POST", "/v1/requests", license_request(deadline_ms=5000)))
    (req,) = await client.rig.sent()
    reply_id = client.rig.answer(req.correlation_id, "license.verify.result")
    await client.rig.h.drain()
    status, doc = await call
    assert status == 200, doc
    assert set(doc) == {"message_id", "status", "reply", "elapsed_ms"}
    assert doc["message_id"] == req.id and doc["status"] == "replied" and doc["reply"]["id"] == reply_id
    status, got = await client.call("GET", f"/v1/requests/{req.id}")
    assert status == 200 and got["status"] == "replied" and got["reply"] == doc["reply"]


async def test_no_reply_in_time_is_504_reply_timeout_with_the_status_url(client: Client) -> None:
    status, doc = await client.call("POST", "/v1/requests", license_request(deadline_ms=100))
    assert status == 504 and doc["code"] == "reply_timeout"
    assert doc["status_url"] == f"/v1/requests/{doc['message_id']}"
    status, got = await client.call("GET", doc["status_url"])
    assert status == 200 and got["status"] == "timed_out" and got["type"] == LICENSE
    status, other = await client.call("GET", doc["status_url"], as_=OTHER)
    assert status == 404 and other["code"] == "not_found"  # only the platform that sent it


@pytest.mark.parametrize(("body", "code"), [
    (license_request(deadline_ms=99_999), "invalid_request"),
    (license_request(deadline_ms=1.5), "invalid_request"),
    ([license_request()], "invalid_request"),
    ({**license_request(), "extra": 1}, "invalid_request"),
    ({"type": "license.verify.result", "to": "JS", "payload": {}}, "invalid_request"),
])
async def test_a_refused_request_is_the_problem_of_post_messages(client: Client, body: Any, code: str) -> None:
    status, doc = await client.call("POST", "/v1/requests", body)
    assert (status, doc["code"]) == (400, code)
    assert client.rig.sent_to_js() == []


async def test_a_facade_route_serves_its_platform_and_refuses_one_not_configured_for_it(client: Client) -> None:
    body = {"message": license_request(), "deadline_ms": 100}
    status, doc = await client.call("POST", "/v1/facades/demo/ask", body)
    assert status == 200 and doc == {"answer": "timed_out", "region": REGION}
    status, doc = await client.call("POST", "/v1/facades/demo/ask", body, as_=OTHER)
    assert status == 403 and doc["code"] == "not_permitted"
    assert len(client.rig.sent_to_js()) == 1  # the refused platform's request never reached the handler
    assert (await client.call("GET", "/v1/facades/demo/hello"))[0] == 200
    status, doc = await client.call("GET", "/v1/facades/demo/hello", as_=OTHER)
    assert status == 403 and doc["code"] == "not_permitted"  # refused before the facade's handler
    async with client.session.post(client.url + "/v1/facades/demo/ask", data=orjson.dumps(body)) as r:
        assert r.status == 401  # behind the same JWT check as every platform route


def test_a_facade_named_in_the_config_must_exist() -> None:
    with pytest.raises(FacadeError, match="no entry point"):
        load_factories(["no-such-facade"])


def test_facade_routes_must_be_route_defs_under_the_facade() -> None:
    from gateway.http.facades import facade_routes

    ctx: Any = type("Ctx", (), {"name": "demo"})()
    with pytest.raises(FacadeError):
        facade_routes(ctx, lambda c: [web.get("relative", lambda r: web.Response())])  # type: ignore[arg-type,return-value]
    (route,) = facade_routes(ctx, lambda c: [web.get("/x", lambda r: web.Response())])  # type: ignore[arg-type,return-value]
    assert route.path == "/v1/facades/demo/x"
    assert Problem("not_permitted", "").status == 403
