"""The HTTP API of one gateway (DESIGN.md section 7). Errors are RFC 9457 problem+json with a stable `code`.

Every route needs a bearer token except the health probes; /metrics takes the operator's static token
(Prometheus cannot mint JWTs).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.audit_index import IndexUnavailable, current_trace
from gateway.auth import AUDIT_SCOPE, AuthError, Principal
from gateway.config import Platform
from gateway.ingress import Prepared
from gateway.problems import Problem

if TYPE_CHECKING:
    from gateway.server import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
PRINCIPAL = "yrdx.principal"
_PUBLIC = {"/healthz", "/readyz", "/metrics"}


def problem_response(p: Problem) -> web.Response:
    return web.Response(status=p.status, body=orjson.dumps(p.body()), content_type="application/problem+json")


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in _PUBLIC:
        return await handler(request)
    gw = request.app[GATEWAY]
    try:
        request[PRINCIPAL] = gw.auth.authenticate(request.headers.get("Authorization"))
    except AuthError as e:
        gw.metrics.refused.labels("unauthenticated").inc()
        resp = problem_response(Problem("unauthenticated", str(e)))
        resp.headers["WWW-Authenticate"] = 'Bearer realm="yrdx"'
        return resp
    try:
        return await handler(request)
    except ProblemError as e:
        gw.metrics.refused.labels(e.problem.code).inc()
        return problem_response(e.problem)


class ProblemError(Exception):
    """Raised by request helpers; the middleware answers it as problem+json."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


async def read_json(request: web.Request, limit: int) -> Any:
    """The body parsed; too large (413, checked before reading it all) or not JSON (400) raise ProblemError."""
    if request.content_length is not None and request.content_length > limit:
        raise ProblemError(Problem("too_large", f"body of {request.content_length} bytes exceeds {limit}"))
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):  # read() returns what has arrived, not all of it
        size += len(chunk)
        if size > limit:
            raise ProblemError(Problem("too_large", f"body exceeds {limit} bytes"))
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ProblemError(Problem("invalid_json", f"body is not valid JSON: {e}")) from e


def require_platform(request: web.Request) -> Platform:
    principal: Principal = request[PRINCIPAL]
    platform = request.app[GATEWAY].cfg.platform(principal.id) if principal.kind == "platform" else None
    if platform is None:
        raise ProblemError(Problem("forbidden", "only a platform may use this route"))
    return platform


def _accepted(p: Prepared) -> dict[str, str]:
    return {"id": p.id, "status": "accepted", "correlation_id": p.correlation_id}


async def post_message(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    item = await read_json(request, gw.cfg.limits.max_body_bytes)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 200:
        return problem_response(Problem("invalid_request", "Idempotency-Key must have 1 to 200 characters"))
    result = await gw.ingress.submit(platform, item, key)
    if isinstance(result, Problem):
        return problem_response(result)
    return json_response(_accepted(result), status=202)


async def post_batch(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    doc = await read_json(request, gw.cfg.limits.max_batch_body_bytes)
    items = doc.get("messages") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        return problem_response(Problem("invalid_request", 'body must be {"messages": [ ... ]} with 1 or more items'))
    if len(items) > gw.cfg.limits.batch_max:
        return problem_response(Problem("too_large", f"{len(items)} messages exceed the batch limit of "
                                                      f"{gw.cfg.limits.batch_max}"))
    results = await gw.ingress.submit_batch(platform, items)
    out = [
        {"index": i, "status": 202, "id": r.id, "correlation_id": r.correlation_id}
        if isinstance(r, Prepared) else {"index": i, **r.body()}
        for i, r in enumerate(results)
    ]
    accepted = sum(1 for r in results if isinstance(r, Prepared))
    # 207: each item has its own status; a batch the broker did not acknowledge is a 503 that still lists
    # every item with its id, since some may have reached the broker before it stopped answering.
    if accepted == 0 and any(isinstance(r, Problem) and r.code == "broker_unavailable" for r in results):
        doc = Problem("broker_unavailable", "the broker did not acknowledge the batch; GET /v1/messages/{id} "
                      "shows what became of each message").body()
        return web.Response(status=503, body=orjson.dumps({**doc, "results": out}),
                            content_type="application/problem+json")
    return json_response({"accepted": accepted, "rejected": len(results) - accepted, "results": out}, status=207)


async def get_message(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal: Principal = request[PRINCIPAL]
    sent = gw.state.sent(request.match_info["id"])
    allowed = sent is not None and (sent.platform == principal.id or AUDIT_SCOPE in principal.scopes)
    if sent is None or not allowed:
        return problem_response(Problem("not_found", "no message with this id was sent by you through this gateway"))
    receipt = next((h.get("detail") for h in reversed(sent.history) if h["stage"] in ("delivered", "rejected")), None)
    return json_response({
        "id": sent.id, "type": sent.type, "to": sent.to_region, "correlation_id": sent.correlation_id,
        "envelope_sha256": sent.envelope_sha256, "status": sent.status, "receipt": receipt,
        "history": sent.history,
    })


async def get_inbox(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    try:
        limit = min(max(int(request.query.get("max", "100")), 1), 1000)
        wait = min(max(float(request.query.get("wait", "0")), 0.0), 30.0)
    except ValueError:
        return problem_response(Problem("invalid_request", "max must be an integer and wait a number of seconds"))
    deadline = time.monotonic() + wait
    while True:
        items = gw.state.lease_inbox(platform.id, limit)
        if items or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    messages = []
    for i in items:
        doc = {"id": i.id, "type": i.type, "from": i.from_region, "signature": i.signature,
               "envelope": orjson.loads(i.envelope)}
        sealed = doc["envelope"].get("sealed")
        if sealed is not None and gw.opener is not None:  # opened on the way out: never stored in clear
            doc["payload"] = orjson.loads(gw.opener.open(sealed))
        messages.append(doc)
    return json_response({"messages": messages})


async def post_inbox_ack(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    doc = await read_json(request, gw.cfg.limits.max_body_bytes)
    ids = doc.get("ids") if isinstance(doc, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return problem_response(Problem("invalid_request", 'body must be {"ids": ["<message id>", ...]}'))
    return json_response({"acked": gw.state.ack_inbox(platform.id, ids)})


async def get_audit_message(request: web.Request) -> web.Response:
    """The message's journey and its conversation's across all regions, from the audit index (as `yrdx audit
    trace --json`), brought up to date from yrdx.audit first (for at most two seconds, off the event loop)."""
    gw = request.app[GATEWAY]
    principal: Principal = request[PRINCIPAL]
    if AUDIT_SCOPE not in principal.scopes:
        return problem_response(Problem("forbidden", f"the {AUDIT_SCOPE} scope is required"))
    target = gw.cfg.audit_index or str(gw.cfg.state_path.with_name("audit-index.sqlite"))
    try:
        doc = await current_trace(gw.cfg.kafka, target, request.match_info["id"])
    except IndexUnavailable as e:
        return problem_response(Problem("index_unavailable", str(e)))
    if doc is None:
        return problem_response(Problem("not_found", "no audit record names this message id"))
    return json_response(doc)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    checks = {"broker": gw.broker_ok, "trust": bool(gw.trust.known()), "schemas": bool(gw.registry.types()),
              "consumer": gw.consumer_running}
    return json_response({"ready": all(checks.values()), "checks": checks}, status=200 if all(checks.values()) else 503)


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    token = gw.metrics_token
    given = request.headers.get("Authorization", "")
    if token is None or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return problem_response(Problem("unauthenticated", "metrics need the operator bearer token"))
    gw.metrics.inbox_depth.set(gw.state.inbox_depth())
    return web.Response(body=generate_latest(gw.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[authenticate], client_max_size=gw.cfg.limits.max_batch_body_bytes + 1)
    app[GATEWAY] = gw
    app.router.add_post("/v1/messages", post_message)
    app.router.add_post("/v1/messages/batch", post_batch)
    app.router.add_get("/v1/messages/{id}", get_message)
    app.router.add_get("/v1/inbox", get_inbox)
    app.router.add_post("/v1/inbox/ack", post_inbox_ack)
    app.router.add_get("/v1/audit/messages/{id}", get_audit_message)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
