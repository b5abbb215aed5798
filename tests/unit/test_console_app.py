"""The console's web server (gateway/console/app.py) over real loopback HTTP, with stand-in gateways serving the
gateway's own metrics registry (gateway.metrics.Metrics), the DLQ read and the replay publish replaced, and an
audit index held in memory: no browser, no Kafka. Operator sign-in guards every route but the sign-in page;
the cookie, the CSRF token, the headers; the live event stream carries the gateways' figures; the DLQ view and the
replay; a message's journey; the assets are all local and all shipped; the token never reaches a log line."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
import tomllib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import generate_latest

from gateway.audit.model import AuditRecord
from gateway.config import KafkaConfig
from gateway.console import app as app_module
from gateway.console.app import Console, build_app, load_assets
from gateway.console.exchange import load_exchange
from gateway.console.scraper import Hub, Scraper
from gateway.console.trail import TrailIndex
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import init_exchange
from gateway.kafka.reader import TopicRecord
from gateway.metrics import Metrics
from gateway.relay.replay import DeadLetter, dead_letters
from gateway.wire import headers

ROOT = Path(__file__).resolve().parents[2]
M1, M2 = "0190a0b1-0000-7000-8000-000000000001", "0190a0b1-0000-7000-8000-000000000002"


def envelope(mid: str) -> bytes:
    return orjson.dumps({"id": mid, "type": "license.verify.request", "schema_version": 1, "from": "JS", "to": "SH",
                         "correlation_id": "c-1", "created_at": "2026-11-23T15:00:00.000Z",
                         "payload": {"secret": "3101151990010104X8"}})


def letter(offset: int, value: bytes, reason: bytes) -> TopicRecord:
    return TopicRecord("yrdx.sh.dlq", 0, offset, b"k", value, {headers.SIGNATURE: b"sig", headers.DLQ_REASON: reason,
                                                                headers.DLQ_DETAIL: b"platform refused: HTTP 422"})


DLQ = dead_letters([letter(0, envelope(M1), b"delivery_failed"), letter(1, b"\xff junk", b"invalid_record"),
                    letter(2, envelope(M2), b"delivery_failed")])


def record(region: str, seq: int, stage: str, mid: str, at: str, **detail: Any) -> AuditRecord:
    return {"seq": seq, "region": region, "message_id": mid, "correlation_id": "c-1", "stage": stage, "at": at,
            "envelope_sha256": "e" * 64, "detail": detail, "prev_hash": "0" * 64, "hash": f"{seq:064x}"}


TRAIL = [
    record("JS", 1, "accepted", M1, "2026-11-23T15:00:00.000Z"),
    record("JS", 2, "published", M1, "2026-11-23T15:00:00.004Z"),
    record("SH", 7, "received", M1, "2026-11-23T15:00:00.010Z", source="yrdx.sh.inbox:0:5"),
    record("SH", 8, "verified", M1, "2026-11-23T15:00:00.011Z", signer="abc"),
    record("SH", 9, "rejected", M1, "2026-11-23T15:00:00.012Z", reason="delivery_failed"),
    record("SH", 10, "dead_lettered", M1, "2026-11-23T15:00:00.012Z", reason="delivery_failed"),
    record("SH", 11, "received", M1, "2026-11-23T15:01:00.000Z"),
    record("SH", 12, "replayed", M1, "2026-11-23T15:01:00.000Z", of="yrdx.sh.dlq:0:0"),
    record("SH", 13, "delivered", M1, "2026-11-23T15:01:00.002Z", platform="sh-platform", mode="webhook"),
]


class MemoryTrail(TrailIndex):
    """The followed index, held in memory: what `trace` and `records_of` read."""

    def __init__(self) -> None:
        super().__init__(KafkaConfig(bootstrap_servers="127.0.0.1:1"), ":memory:", TrustStore([]))
        self.records = TRAIL

    async def open(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        self.following = True
        await stop.wait()

    async def trace(self, message_id: str) -> dict[str, Any] | None:
        mine = [r for r in self.records if r["message_id"] == message_id]
        if not mine:
            return None
        return {"message_id": message_id, "correlation_ids": ["c-1"], "message_ids": [message_id], "receipt_ids": [],
                "regions": sorted({r["region"] for r in mine}), "signers": {}, "records": mine, "conflicts": []}

    async def records_of(self, message_ids: Collection[str]) -> list[AuditRecord]:
        return [r for r in self.records if r["message_id"] in message_ids]

    async def close(self) -> None:
        pass


@dataclass
class World:
    url: str
    token: str
    console: Console
    metrics: dict[str, Metrics]
    replayed: list[tuple[str, list[str]]] = field(default_factory=list)


async def fake_gateway(m: Metrics, token: str) -> tuple[web.AppRunner, str]:
    async def metrics(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.Response(status=401)
        return web.Response(body=generate_latest(m.registry), content_type="text/plain")

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "checks": {"broker": True}, "failing": []})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    init_exchange(tmp_path, base_port=0, bootstrap_servers="127.0.0.1:1")
    token = (tmp_path / "secrets" / "metrics.token").read_text().strip()
    metrics = {r: Metrics(r, "0.1.0", "ES256") for r in ("SH", "JS")}
    metrics["JS"].messages.labels("out", "SH", "license", "accepted").inc(12)
    metrics["SH"].messages.labels("in", "JS", "license", "delivered").inc(10)
    metrics["SH"].messages.labels("in", "JS", "license", "rejected").inc(2)
    metrics["SH"].dead_letters.labels("delivery_failed", "JS").inc(2)
    runners, urls = [], {}
    for region, m in metrics.items():
        runner, urls[region] = await fake_gateway(m, token)
        runners.append(runner)
    urls["ZJ"] = urls["AH"] = "http://127.0.0.1:9"  # nobody listens there
    exchange = load_exchange(tmp_path, urls)
    hub = Hub()
    console = Console(exchange, Scraper(exchange, hub, interval_s=0.2, window_s=1.0, timeout_s=1.0), hub,
                      MemoryTrail())
    w = World("", token, console, metrics)

    async def read(kafka: KafkaConfig, region: str, timeout_s: float = 30.0) -> list[DeadLetter]:
        return list(DLQ)

    async def replay(kafka: KafkaConfig, region: str, letters: Sequence[DeadLetter], timeout_s: float = 30.0) -> None:
        w.replayed.append((region, [d.where for d in letters]))

    monkeypatch.setattr(app_module, "read_dead_letters", read)
    monkeypatch.setattr(app_module, "replay", replay)
    runner = web.AppRunner(build_app(console), access_log_class=app_module.AccessLog, access_log=app_module.access)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    w.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield w
    finally:
        await runner.cleanup()
        for r in runners:
            await r.cleanup()


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies of 127.0.0.1 too


async def sign_in(http: aiohttp.ClientSession, w: World, next_: str = "/") -> aiohttp.ClientResponse:
    async with http.post(w.url + "/login", data={"token": w.token, "next": next_}, allow_redirects=False) as r:
        return r


async def csrf(http: aiohttp.ClientSession, w: World) -> str:
    async with http.get(w.url + "/dlq") as r:
        page = await r.text()
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found is not None
    return found.group(1)


GUARDED_GETS = ["/", "/dlq", "/messages", f"/messages/{M1}", "/static/overview.js", "/static/common.js",
                "/api/snapshot", "/api/events", "/api/dlq/SH", f"/api/messages/{M1}"]


async def test_every_route_but_the_sign_in_needs_an_operator(world: World) -> None:
    async with client() as http:
        for path in GUARDED_GETS:
            async with http.get(world.url + path, allow_redirects=False) as r:
                if path.startswith("/api/"):
                    assert r.status == 401, path
                    assert (await r.json())["error"] == "unauthenticated"
                else:
                    assert r.status == 303, path
                    assert r.headers["Location"].startswith("/login?next=/"), path
        for path in ("/api/dlq/SH/replay", "/logout"):
            async with http.post(world.url + path, data=b"{}") as r:
                assert r.status == 401, path
        for path in ("/login", "/static/console.css", "/favicon.ico", "/static/favicon.svg"):
            async with http.get(world.url + path) as r:
                assert r.status == 200, path
        assert world.replayed == []


async def test_sign_in_sets_a_strict_http_only_cookie_and_goes_where_it_was_asked(world: World) -> None:
    async with client() as http:
        async with http.post(world.url + "/login", data={"token": "wrong", "next": "/dlq"}) as r:
            assert r.status == 401 and "That is not the operator token" in await r.text()
        r = await sign_in(http, world, "/dlq?region=SH")
        assert r.status == 303 and r.headers["Location"] == "/dlq?region=SH"
        (cookie,) = r.headers.getall("Set-Cookie")
        assert cookie.startswith("yrdx_console_session=")
        assert {"HttpOnly", "Path=/", "SameSite=Strict"} <= {p.strip() for p in cookie.split(";")}
        first = cookie.split(";")[0]
        async with http.get(world.url + "/api/snapshot") as r:
            assert r.status == 200
        again = await sign_in(http, world, "https://evil.example/")
        assert again.headers["Location"] == "/"  # never away from the console
        assert again.headers.getall("Set-Cookie")[0].split(";")[0] != first  # a new id at every sign-in
        assert len(world.console.sessions) == 1  # the old session ended with it


async def test_after_sign_in_the_page_that_was_asked_for(world: World) -> None:
    async with client() as http:
        async with http.get(world.url + "/messages/a%20b?x=1&y=2", allow_redirects=False) as r:
            where = r.headers["Location"]
        async with http.get(world.url + where) as r:
            page = await r.text()
        found = re.search(r'name="next" value="([^"]+)"', page)
        assert found is not None and found.group(1) == "/messages/a%20b?x=1&amp;y=2"
        r = await sign_in(http, world, "/messages/a%20b?x=1&y=2")
        assert r.headers["Location"] == "/messages/a%20b?x=1&y=2"


async def test_behind_a_tls_proxy_the_cookie_is_secure(world: World) -> None:
    world.console.secure_cookies = True
    async with client() as http:
        r = await sign_in(http, world)
        assert "Secure" in {p.strip() for p in r.headers["Set-Cookie"].split(";")}


async def test_repeated_failures_brake_the_address(world: World) -> None:
    async with client() as http:
        for _ in range(5):
            async with http.post(world.url + "/login", data={"token": "guess"}) as r:
                assert r.status == 401
        r = await sign_in(http, world)
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0


async def test_headers_on_every_answer(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        for path in ("/", "/api/snapshot", "/login", "/nowhere", "/static/overview.js"):
            async with http.get(world.url + path, allow_redirects=False) as r:
                h = r.headers
                assert "script-src 'self'" in h["Content-Security-Policy"], path
                assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
                assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
                assert h["Server"] == "yrdx-console"
                if not path.startswith("/static"):
                    assert h["Cache-Control"] == "no-store", path


async def test_a_replay_needs_the_sessions_csrf_token_and_the_consoles_origin(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        token = await csrf(http, world)
        body = orjson.dumps({"at": ["0:0"]})
        async with http.post(world.url + "/api/dlq/SH/replay", data=body) as r:
            assert r.status == 403 and (await r.json())["error"] == "csrf"
        async with http.post(world.url + "/api/dlq/SH/replay", data=body, headers={"X-CSRF-Token": "x" + token}) as r:
            assert r.status == 403
        async with http.post(world.url + "/api/dlq/SH/replay", data=body,
                             headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}) as r:
            assert r.status == 403 and (await r.json())["error"] == "cross_origin"
        async with http.post(world.url + "/api/dlq/SH/replay", data=body,
                             headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}) as r:
            assert r.status == 403
        assert world.replayed == []
        async with http.post(world.url + "/api/dlq/SH/replay", data=body,
                             headers={"X-CSRF-Token": token, "Origin": world.url}) as r:
            assert r.status == 200
            assert await r.json() == {"replayed": 1, "inbox": "yrdx.sh.inbox",
                                      "letters": [{"at": "0:0", "message_id": M1, "reason": "delivery_failed"}]}
        assert world.replayed == [("SH", ["0:0"])]


async def test_replay_by_position_or_reason_and_what_it_refuses(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        h = {"X-CSRF-Token": await csrf(http, world)}

        async def post(body: object, region: str = "SH") -> tuple[int, Any]:
            async with http.post(f"{world.url}/api/dlq/{region}/replay", data=orjson.dumps(body), headers=h) as r:
                return r.status, await r.json() if r.content_type == "application/json" else await r.text()

        assert (await post({"reason": "delivery_failed"}))[1]["replayed"] == 2
        assert (await post({"at": ["0:2", "0:1"]}))[1]["replayed"] == 2
        assert world.replayed == [("SH", ["0:0", "0:2"]), ("SH", ["0:2", "0:1"])]
        status, doc = await post({"at": ["0:0", "0:99"]})
        assert status == 404 and "0:99" in doc["detail"]
        assert (await post({"reason": "expired"}))[0] == 404
        assert (await post({}))[0] == 404
        assert (await post({"at": "0:0"}))[0] == 400
        assert (await post({"at": [1]}))[0] == 400
        assert (await post({"reason": "x" * 100}))[0] == 400
        assert (await post({"at": ["0:0"]}, region="XX"))[0] == 404
        async with http.post(f"{world.url}/api/dlq/SH/replay", data=b"not json", headers=h) as r:
            assert r.status == 400
        assert len(world.replayed) == 2


async def test_the_dlq_view_lists_routing_never_payloads(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        async with http.get(world.url + "/api/dlq/SH") as r:
            assert r.status == 200
            raw = await r.read()
    doc = orjson.loads(raw)
    assert doc["reasons"] == {"delivery_failed": 2, "invalid_record": 1}
    assert doc["count"] == 3 and [x["at"] for x in doc["letters"]] == ["0:2", "0:1", "0:0"]  # newest first
    first = doc["letters"][2]
    assert first["message_id"] == M1 and first["type"] == "license.verify.request" and first["from"] == "JS"
    assert first["status"] == {"replays": 1, "last_replay_at": "2026-11-23T15:01:00.000Z", "delivered": True,
                               "delivered_at": "2026-11-23T15:01:00.002Z"}
    assert doc["letters"][0]["status"]["replays"] == 0 and not doc["letters"][0]["status"]["delivered"]
    assert doc["letters"][1]["message_id"] is None and doc["letters"][1]["type"] is None
    assert b"3101151990010104X8" not in raw and b"secret" not in raw


async def test_a_message_journey(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        async with http.get(f"{world.url}/api/messages/{M1}") as r:
            doc = await r.json()
        async with http.get(f"{world.url}/api/messages/{M2}") as r:
            assert r.status == 404
        async with http.get(f"{world.url}/api/messages/a%01b") as r:
            assert r.status == 400
    assert doc["lanes"] == ["JS", "SH"]
    assert [(row["region"], row["stage"], row["lane"]) for row in doc["rows"]][:3] == [
        ("JS", "accepted", 0), ("JS", "published", 0), ("SH", "received", 1)]
    (hop,) = doc["hops"]
    assert (hop["origin"], hop["destination"], hop["outcome"]) == ("JS", "SH", "delivered")
    assert hop["steps"][2]["after_ms"] == pytest.approx(10.0)


async def test_the_event_stream_carries_the_gateways_figures_and_ends_at_sign_out(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        token = await csrf(http, world)
        async with http.get(world.url + "/api/events") as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            events: list[tuple[str, Any]] = []
            buffer = b""
            while sum(1 for e, d in events if e == "snapshot" and d["regions"]["SH"]["up"]) < 2:
                buffer += await asyncio.wait_for(r.content.readany(), 10)
                while b"\n\n" in buffer:
                    chunk, buffer = buffer.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in chunk.decode().splitlines() if ": " in line)
                    if "event" in fields:
                        events.append((fields["event"], orjson.loads(fields["data"])))
            assert events[0][0] == "meta" and events[0][1]["regions"] == ["SH", "JS", "ZJ", "AH"]
            snap = events[-1][1]
            pair = next(p for p in snap["pairs"] if (p["from"], p["to"]) == ("JS", "SH"))
            assert pair["sent"]["total"] == 12 and pair["delivered"]["total"] == 10 and pair["rejected"]["total"] == 2
            assert snap["regions"]["SH"]["dead_letters"]["by_reason"]["delivery_failed"]["total"] == 2
            assert snap["regions"]["ZJ"]["up"] is False and snap["regions"]["ZJ"]["error"]
            assert snap["regions"]["SH"]["ready"] is True
            async with http.post(world.url + "/logout", data={"csrf": token}, allow_redirects=False) as out:
                assert out.status == 303 and out.headers["Location"] == "/login"
            rest = b""
            while b"event: logout" not in rest:
                part = await asyncio.wait_for(r.content.readany(), 10)
                assert part, rest
                rest += part
        async with http.get(world.url + "/api/snapshot") as r:
            assert r.status == 401


async def test_sign_out_needs_the_csrf_token(world: World) -> None:
    async with client() as http:
        await sign_in(http, world)
        async with http.post(world.url + "/logout", data={"csrf": "forged"}, allow_redirects=False) as r:
            assert r.status == 403
        async with http.get(world.url + "/api/snapshot") as r:
            assert r.status == 200


def test_every_asset_is_local_and_shipped() -> None:
    assets = load_assets()
    assert {"login.html", "overview.html", "dlq.html", "message.html", "console.css", "common.js", "overview.js",
            "dlq.js", "message.js", "favicon.svg"} <= set(assets)
    external = re.compile(rb"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import|"""
                          rb"""fetch\(\s*["'`]https?:|EventSource\(\s*["'`]https?:""", re.IGNORECASE)
    for name, body in assets.items():
        assert not external.search(body), name
        assert b"<script>" not in body and b"style=" not in body, name  # the CSP allows neither inline
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = package_data["gateway.console"]
    assert all(any(fnmatch.fnmatch(f"assets/{name}", g) for g in globs) for name in assets), globs


async def test_the_token_never_reaches_a_log_line(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with client() as http:
        async with http.post(world.url + "/login", data={"token": world.token + "x"}) as r:
            assert r.status == 401
        await sign_in(http, world)
        async with http.get(world.url + "/api/snapshot") as r:
            assert r.status == 200
        await asyncio.sleep(0.5)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "operator signed in" in text and "operator sign-in refused" in text
    assert world.token not in text
