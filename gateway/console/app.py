"""The console's web server (aiohttp): pages, JSON API, the live event stream, and operator sign-in.

Every route needs a signed-in operator (gateway.console.sessions) except the sign-in page and the two assets it
shows (its style sheet and icon). Pages and scripts are package data (gateway/console/assets), served from here:
no CDN, no external font. Responses carry a strict Content-Security-Policy (scripts and styles of this origin
only), `X-Frame-Options: DENY` and `Cache-Control: no-store`. A state-changing request (sign-in, sign-out, replay)
must come from the console's own origin; the replay and the sign-out also carry the session's CSRF token.

Routes: GET /login, POST /login, POST /logout; pages GET / (the regions), /dlq (dead letters), /messages and
/messages/{id} (one message's journey); API GET /api/snapshot, /api/events (server-sent events, one snapshot
per scrape round), /api/dlq/{region}, POST /api/dlq/{region}/replay, GET /api/messages/{id}.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib.resources
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.console.dlq import SelectionError, choose, dlq_view
from gateway.console.exchange import ExchangeDir
from gateway.console.scraper import Hub, Scraper, sse_event
from gateway.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    LoginThrottle,
    Session,
    Sessions,
    safe_next,
    same_origin,
    token_matches,
)
from gateway.console.trail import TrailIndex, journey_view
from gateway.relay.replay import read_dead_letters, replay

log = logging.getLogger(__name__)
access = logging.getLogger("gateway.console.access")

ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".html": "text/html"}
PUBLIC_PATHS = frozenset({"/login", "/favicon.ico", "/static/console.css", "/static/favicon.svg"})
PAGES = ("login.html", "overview.html", "dlq.html", "message.html")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
MAX_MESSAGE_ID = 128
DLQ_READ_TIMEOUT_S = 15.0
KEEPALIVE_S = 15.0
REGION_NAMES = {"SH": "Shanghai", "JS": "Jiangsu", "ZJ": "Zhejiang", "AH": "Anhui"}


def load_assets() -> dict[str, bytes]:
    """Every file of gateway/console/assets by name (the package data of the wheel, or the source tree)."""
    root = importlib.resources.files("gateway.console").joinpath("assets")
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file() and not p.name.startswith(".")}


@dataclass
class Console:
    """What the server holds: the exchange, the sign-ins, the scrape loop and its hub, the audit index."""

    exchange: ExchangeDir
    scraper: Scraper
    hub: Hub
    trail: TrailIndex
    sessions: Sessions = field(default_factory=Sessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    assets: dict[str, bytes] = field(default_factory=load_assets)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    replay_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    secure_cookies: bool = False  # mark the cookie Secure even on plain HTTP (behind a TLS-terminating proxy)

    def page(self, name: str, **values: str) -> bytes:
        """An HTML page of the assets with its {{placeholders}} filled in, each value HTML-escaped."""
        text = self.assets[name].decode()
        # One header for every page, put in before the values (it holds placeholders of its own).
        text = text.replace("<!-- the shared header: header.part.html -->\n", self.assets["header.part.html"].decode())
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
        return text.encode()


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
SESSION_ID: web.RequestKey[str] = web.RequestKey("session_id", str)


def _json(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json", headers=headers)


def _problem(status: int, code: str, detail: str) -> web.Response:
    return _json({"error": code, "detail": detail}, status)


def _html(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/html", charset="utf-8")


# --- sign-in, sessions and headers --------------------------------------------------------------------------


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    """Signed-in operators only (except PUBLIC_PATHS); POSTs only from this console's own pages."""
    console = request.app[CONSOLE]
    if request.method not in ("GET", "HEAD") and not same_origin(
            request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), request.scheme, request.host):
        log.warning("cross-origin request refused", extra={"path": request.path, "remote": request.remote})
        return _problem(403, "cross_origin", "requests that change something must come from the console's pages")
    if request.path not in PUBLIC_PATHS:
        session_id = request.cookies.get(COOKIE)
        session = console.sessions.get(session_id)
        if session is None or session_id is None:
            if request.path.startswith("/api/") or request.method not in ("GET", "HEAD"):
                return _problem(401, "unauthenticated", "sign in first (/login)")
            raise web.HTTPSeeOther(f"/login?next={quote(str(request.rel_url), safe='')}")
        request[SESSION] = session
        request[SESSION_ID] = session_id
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, errors and redirects included."""
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cache-Control", "no-store")
    h["Server"] = "yrdx-console"


def _client(request: web.Request) -> str:
    return request.remote or "?"


async def get_login(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    if console.sessions.get(request.cookies.get(COOKIE)) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    return _html(console.page("login.html", next=safe_next(request.query.get("next")), error=""))


async def post_login(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    client = _client(request)
    wait = console.throttle.retry_after(client)
    form = await request.post()
    target = safe_next(str(form.get("next") or ""))
    if wait > 0:
        log.warning("operator sign-in refused: too many failures", extra={"remote": client})
        page = console.page("login.html", next=target,
                            error=f"Too many failed sign-ins. Try again in {int(wait) + 1} s.")
        response = _html(page, 429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    token = form.get("token")
    if not isinstance(token, str) or not token_matches(token, console.exchange.operator_token()):
        console.throttle.failed(client)
        log.warning("operator sign-in refused: wrong token", extra={"remote": client})
        return _html(console.page("login.html", next=target, error="That is not the operator token."), 401)
    console.throttle.succeeded(client)
    console.sessions.drop(request.cookies.get(COOKIE))
    session_id, session = console.sessions.create()
    log.info("operator signed in", extra={"remote": client, "session": session.label})
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(COOKIE, session_id, path="/", httponly=True, samesite="Strict",
                        secure=request.secure or console.secure_cookies)
    return response


async def post_logout(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    session = request[SESSION]
    form = await request.post()
    given = form.get("csrf")
    if not session.csrf_matches(given if isinstance(given, str) else request.headers.get(CSRF_HEADER)):
        return _problem(403, "csrf", "the sign-out form is not this session's")
    console.sessions.drop(request[SESSION_ID])
    log.info("operator signed out", extra={"remote": _client(request), "session": session.label})
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(COOKIE, path="/", samesite="Strict")
    return response


# --- pages and assets ---------------------------------------------------------------------------------------


def _page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        console = request.app[CONSOLE]
        regions = " ".join(console.exchange.regions)
        return _html(console.page(name, csrf=request[SESSION].csrf, regions=regions))
    return handler


async def get_messages(request: web.Request) -> web.Response:
    """The message lookup: /messages?id=X goes to /messages/X."""
    wanted = request.query.get("id", "").strip()
    if wanted:
        raise web.HTTPSeeOther(f"/messages/{quote(wanted, safe='')}")
    return await _page("message.html")(request)


async def get_asset(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    name = request.match_info["name"]
    suffix = name[name.rfind("."):] if "." in name else ""
    if name not in console.assets or name in PAGES or suffix not in ASSET_TYPES:
        raise web.HTTPNotFound()
    return web.Response(body=console.assets[name], content_type=ASSET_TYPES[suffix],
                        headers={"Cache-Control": "no-cache"})


async def get_favicon(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CONSOLE].assets["favicon.svg"], content_type="image/svg+xml",
                        headers={"Cache-Control": "no-cache"})


# --- the figures --------------------------------------------------------------------------------------------


def _meta(console: Console) -> dict[str, Any]:
    ex = console.exchange
    return {"regions": ex.regions, "names": {r: REGION_NAMES.get(r, r) for r in ex.regions},
            "gateways": {r: g.base_url for r, g in ex.gateways.items()},
            "namespace": ex.kafka.namespace, "bootstrap_servers": ex.kafka.bootstrap_servers}


async def get_snapshot(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    last = console.scraper.last
    return _json({"meta": _meta(console), "snapshot": last})


async def get_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `meta` once, then a `snapshot` after every scrape round (the latest one first);
    `logout` and the end of the stream when the session ends, a comment line every 15 s to keep proxies open."""
    console = request.app[CONSOLE]
    session = request[SESSION]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue = console.hub.subscribe()
    try:
        await response.write(b"retry: 3000\n\n" + sse_event("meta", orjson.dumps(_meta(console))))
        while not console.stopping.is_set():
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                item = b""
            if item is None:
                break
            if not console.sessions.touch(session):  # an open page keeps its session (up to its maximum age)
                await response.write(sse_event("logout", b"{}"))
                break
            await response.write(sse_event("snapshot", item) if item else b": keep-alive\n\n")
    except ConnectionError:
        pass  # the page went away
    finally:
        console.hub.unsubscribe(queue)
    return response


# --- dead letters -------------------------------------------------------------------------------------------


def _region(request: web.Request) -> str:
    region = request.match_info["region"].upper()
    if region not in request.app[CONSOLE].exchange.gateways:
        raise web.HTTPNotFound(text=f"no gateway config for {region}")
    return region


async def get_dlq(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    region = _region(request)
    cfg = console.exchange.gateways[region].config
    topic = cfg.topics.dlq(region)
    try:
        letters = await read_dead_letters(cfg.kafka, region, DLQ_READ_TIMEOUT_S)
    except Exception as e:  # timeouts and the client library's connection errors alike
        log.warning("cannot read a DLQ", extra={"region": region, "error": repr(e)})
        return _problem(502, "dlq_unavailable", f"cannot read {topic}: {e.__class__.__name__}")
    ids = {d.message_id for d in letters if d.message_id}
    records = await console.trail.records_of(ids) if ids else []
    reason = request.query.get("reason") or None
    doc = dlq_view(region, topic, letters, records, reason)
    doc["index"] = {"following": console.trail.following, "error": console.trail.error}
    doc["read_at"] = time.time()
    return _json(doc)


async def post_replay(request: web.Request) -> web.Response:
    """Replay dead letters with gateway.relay.replay (the path of `yrdx dlq replay`): the same signed bytes back
    on the region's inbox, marked `yrdx-replay-of`, checked from scratch and audited (`replayed`) by its gateway.
    Body: {"at": ["partition:offset", ...]} or {"reason": CODE}; header X-CSRF-Token."""
    console = request.app[CONSOLE]
    session = request[SESSION]
    region = _region(request)
    if not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        log.warning("replay refused: no CSRF token of the session", extra={"remote": _client(request)})
        return _problem(403, "csrf", f"a replay needs the session's {CSRF_HEADER} header")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _problem(400, "invalid_request", "the body is not JSON")
    positions = body.get("at") if isinstance(body, dict) else None
    reason = body.get("reason") if isinstance(body, dict) else None
    if positions is not None and (not isinstance(positions, list) or len(positions) > 1000
                                  or not all(isinstance(p, str) and len(p) <= 40 for p in positions)):
        return _problem(400, "invalid_request", '"at" is a list of at most 1000 DLQ positions "partition:offset"')
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 64):
        return _problem(400, "invalid_request", '"reason" is a reason code')
    cfg = console.exchange.gateways[region].config
    lock = console.replay_locks.setdefault(region, asyncio.Lock())
    async with lock:  # one replay of a region at a time: a double click waits, then reads the DLQ again
        try:
            letters = await read_dead_letters(cfg.kafka, region, DLQ_READ_TIMEOUT_S)
        except Exception as e:
            return _problem(502, "dlq_unavailable", f"cannot read {cfg.topics.dlq(region)}: {e.__class__.__name__}")
        try:
            chosen = choose(letters, positions or (), reason)
        except SelectionError as e:
            return _problem(404, "no_match", str(e))
        try:
            await replay(cfg.kafka, region, chosen)
        except Exception as e:
            log.warning("replay failed", extra={"region": region, "error": repr(e), "session": session.label})
            return _problem(502, "replay_failed", f"the broker did not take the replay: {e.__class__.__name__}")
    log.info("dead letters replayed", extra={
        "region": region, "count": len(chosen), "positions": [d.where for d in chosen][:50],
        "message_ids": [d.message_id for d in chosen][:50], "reason": reason, "session": session.label,
        "remote": _client(request)})
    return _json({"replayed": len(chosen), "inbox": cfg.topics.inbox(region),
                  "letters": [{"at": d.where, "message_id": d.message_id or None, "reason": d.reason}
                              for d in chosen]})


# --- one message --------------------------------------------------------------------------------------------


async def get_message(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    message_id = request.match_info["id"]
    if not 0 < len(message_id) <= MAX_MESSAGE_ID or any(ord(c) < 0x20 or ord(c) == 0x7F for c in message_id):
        return _problem(400, "invalid_request", f"a message id is 1 to {MAX_MESSAGE_ID} characters")
    doc = await console.trail.trace(message_id)
    index = {"following": console.trail.following, "error": console.trail.error}
    if doc is None:
        return _json({"error": "not_found", "detail": "no audit record names this message id (yet)",
                      "index": index}, 404)
    return _json({**journey_view(doc), "index": index})


# --- the application ----------------------------------------------------------------------------------------


class AccessLog(AbstractAccessLogger):
    """One line per request: method, path without its query, status and time; never a header or a body."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        access.info("request", extra={"method": request.method, "path": request.path, "status": response.status,
                                      "ms": round(time * 1000, 1), "remote": request.remote})


def build_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[CONSOLE] = console
    app.on_response_prepare.append(_security_headers)

    async def background(app: web.Application) -> AsyncIterator[None]:
        await console.trail.open()
        tasks = [asyncio.create_task(console.scraper.run(console.stopping), name="console-scrape"),
                 asyncio.create_task(console.trail.run(console.stopping), name="console-audit-index")]
        yield
        console.stopping.set()
        console.hub.close()
        for t in tasks:
            try:
                await asyncio.wait_for(t, 10.0)
            except (TimeoutError, asyncio.CancelledError):
                t.cancel()
            except Exception:
                log.exception("console task failed")
        await console.trail.close()

    async def end_streams(app: web.Application) -> None:
        console.stopping.set()
        console.hub.close()

    app.cleanup_ctx.append(background)
    app.on_shutdown.append(end_streams)
    r = app.router
    r.add_get("/login", get_login)
    r.add_post("/login", post_login)
    r.add_post("/logout", post_logout)
    r.add_get("/", _page("overview.html"))
    r.add_get("/dlq", _page("dlq.html"))
    r.add_get("/messages", get_messages)
    r.add_get("/messages/{id}", _page("message.html"))
    r.add_get("/favicon.ico", get_favicon)
    r.add_get("/static/{name}", get_asset)
    r.add_get("/api/snapshot", get_snapshot)
    r.add_get("/api/events", get_events)
    r.add_get("/api/dlq/{region}", get_dlq)
    r.add_post("/api/dlq/{region}/replay", post_replay)
    r.add_get("/api/messages/{id}", get_message)
    return app


def make_console(exchange: ExchangeDir, index_target: str, *, interval_s: float = 2.0,
                 window_s: float = 10.0, secure_cookies: bool = False) -> Console:
    hub = Hub()
    return Console(
        exchange=exchange,
        scraper=Scraper(exchange, hub, interval_s=interval_s, window_s=window_s),
        hub=hub,
        trail=TrailIndex(exchange.kafka, index_target, exchange.trust()),
        secure_cookies=secure_cookies,
    )


async def serve_console(console: Console, host: str, port: int, on_ready: Callable[[str, int], None]) -> None:
    """Serve until SIGTERM or SIGINT; `on_ready(url, port)` once listening."""
    import signal

    runner = web.AppRunner(build_app(console), access_log_class=AccessLog, access_log=access,
                           handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{bound}/", bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("console stopping")
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


__all__ = ["Console", "build_app", "load_assets", "make_console", "serve_console"]
