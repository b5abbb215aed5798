"""The HTTP API of one gateway (README "HTTP API"). Errors are RFC 9457 problem+json with a stable `code`.

Every route needs a bearer token except the health probes; /metrics takes the operator's static token
(Prometheus cannot mint JWTs). Malformed HTTP, unknown routes and slow clients get problem+json too, from the
protocol handler below (README "HTTP limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.audit.index import IndexUnavailable, current_trace, current_usage
from gateway.config import Platform
from gateway.files.chunks import CHUNK_BYTES
from gateway.files.manifest import MEDIA_TYPE
from gateway.files.sender import WINDOW, TooLarge
from gateway.http import openapi
from gateway.http.admission import RETRY_AFTER_S, Admission, Overloaded
from gateway.http.auth import AUDIT_SCOPE, AuthError, Principal, one_authorization
from gateway.http.context import ApiContext
from gateway.kafka.port import BrokerUnavailable
from gateway.relay.inbox_document import inbox_document
from gateway.relay.ingress import MAX_IDEMPOTENCY_KEY
from gateway.relay.signed import Signed
from gateway.state import InboxItem, StateUnavailable
from gateway.wire import headers
from gateway.wire.problems import Problem, ProblemError
from gateway.wire.regions import REGIONS
from gateway.wire.text import header_safe

log = logging.getLogger(__name__)

GATEWAY: web.AppKey[ApiContext] = web.AppKey("gateway")
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)  # set on shutdown: long polls end
ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
PROBLEM: web.ResponseKey[Problem] = web.ResponseKey("problem", Problem)
# The messages a response accepted (a 202, or a 207's accepted items): each observed in the request latency.
ACCEPTED: web.ResponseKey[int] = web.ResponseKey("accepted", int)
_PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
SERVER = "yrdx"  # the Server header: no Python or aiohttp version

# HTTP limits (README "HTTP limits"). aiohttp's keep-alive timer also runs while a request's header is
# arriving, so it bounds both an idle connection and a client dribbling its header.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0  # the whole body, once the header is in
LINGER_S = 1.0  # after answering a request whose body is still arriving (aiohttp lingers for 10 s)
MAX_LINE_BYTES = 8190  # request line and each header line
MAX_HEADERS = 128
MAX_SUBJECTS = 20  # pseudonyms per usage query: one per region pair and identifier type is a handful
PSEUDONYM = re.compile(r"[0-9a-f]{64}")
MAX_PULL = 1000
INBOX_POLL_S = 0.05  # a long-poll's lease query at least this often (gateway/state/doorbell.py)
MAX_WAIT_S = 30.0
_DIGITS = re.compile(r"[0-9]{1,9}")


def problem_response(p: Problem) -> web.Response:
    resp = web.Response(status=p.status, body=orjson.dumps(p.body()), content_type="application/problem+json")
    resp[PROBLEM] = p  # for the refusal log line
    return resp


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def answer_problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outer middleware: an unknown route or method is answered before authentication, and every
    ProblemError raised below becomes its problem+json answer (counted by code)."""
    routing = request.match_info.http_exception
    if isinstance(routing, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(routing.allowed_methods))
        refusal = problem_response(Problem("method_not_allowed", f"this route takes {allowed}"))
        refusal.headers["Allow"] = allowed
        return refusal
    if isinstance(routing, web.HTTPNotFound):
        return problem_response(Problem("not_found", "no such route"))
    gw = request.app[GATEWAY]
    gw.metrics.in_flight.inc()
    started = time.perf_counter()
    resp: web.StreamResponse
    try:
        resp = await handler(request)
    except StateUnavailable as e:  # the state database is gone: the request is refused, not failed
        resp = problem_response(Problem("state_unavailable", f"the gateway's state cannot be reached: {e}"))
    except ProblemError as e:
        resp = problem_response(e.problem)
        if e.problem.code == "unauthenticated":
            resp.headers["WWW-Authenticate"] = 'Bearer realm="yrdx"'
        elif e.problem.code == "overloaded":
            resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    finally:
        gw.metrics.in_flight.dec()
    accepted = resp.get(ACCEPTED)
    if accepted:  # from the request's authentication to its answer: what a platform waits (bar its own network)
        elapsed = time.perf_counter() - started
        for _ in range(accepted):
            gw.metrics.ingress_seconds.observe(elapsed)
    problem = resp.get(PROBLEM)
    if problem is not None:  # every refused request counted and logged here, raised or returned alike
        gw.metrics.refused.labels(problem.code).inc()
        log_refusal(request, problem)
    return resp


def log_refusal(request: web.Request, problem: Problem) -> None:
    """One line per refused request: its code, route and caller, never a value from the request."""
    principal = request.get(PRINCIPAL)
    resource = request.match_info.route.resource
    log.info("request refused", extra={
        "code": problem.code, "status": problem.status, "method": request.method,
        "route": resource.canonical if resource is not None else "unmatched",
        "caller": principal.id if principal is not None else "",
    })


# The routes that take messages in (each request holds one message at least). When the gateway is already full
# such a request is refused before its token is verified: under overload a refusal then costs next to nothing,
# instead of an ES256 verification each (which took capacity from the requests being accepted). The 429 says only
# that the gateway is busy; the handler's own admission still decides every request that gets this far.
_SHED_BEFORE_AUTH = frozenset({"/v1/messages", "/v1/requests", "/v1/messages/batch"})


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC:
        return await handler(request)
    if request.method == "POST" and request.path in _SHED_BEFORE_AUTH:
        admission = request.app[ADMISSION]
        if admission.refuses(1, request.content_length or 0):
            raise ProblemError(admission.problem())
    try:
        authorization = one_authorization(request.headers.getall("Authorization", []))
        request[PRINCIPAL] = await request.app[GATEWAY].auth.authenticate(authorization)
    except AuthError as e:
        raise ProblemError(Problem("unauthenticated", str(e))) from e
    return await handler(request)


async def post_token(request: web.Request) -> web.StreamResponse:
    """An access token for the caller of this request's assertion (http/access_tokens.py), reused until it
    expires: a token request authenticates as every other request, and only by an assertion."""
    principal: Principal = request[PRINCIPAL]
    try:
        token, lifetime = request.app[GATEWAY].auth.issue(principal)
    except AuthError as e:
        raise ProblemError(Problem("unauthenticated", str(e))) from e
    log.info("access token issued", extra={"caller": principal.id, "kind": principal.kind, "expires_in": lifetime})
    resp = json_response({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})
    resp.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: a credential, never cached
    return resp


async def read_json(request: web.Request, limit: int) -> Any:
    """The body parsed; too large (413, checked before reading it all), too slow (408), cut off or badly framed
    (400) or not JSON (400) raise ProblemError."""
    if request.content_length is not None and request.content_length > limit:
        raise ProblemError(Problem("too_large", f"body of {request.content_length} bytes exceeds {limit}"))
    chunks: list[bytes] = []
    size = 0
    # A small body has usually arrived whole with its header: then no read can wait, and no timer is armed.
    arriving = not request.content.is_eof()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S) if arriving else contextlib.nullcontext():
            while chunk := await request.content.read(65536):  # read() returns what has arrived, not all of it
                size += len(chunk)
                if size > limit:
                    raise ProblemError(Problem("too_large", f"body exceeds {limit} bytes"))
                chunks.append(chunk)
    except TimeoutError as e:
        raise ProblemError(Problem("request_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s")) from e
    except web.RequestPayloadError as e:  # bad chunked framing or compression; the reason may quote bytes
        raise ProblemError(Problem("invalid_request", "the body is not validly framed or encoded")) from e
    except ConnectionError as e:  # the client went away; nobody reads this answer
        raise ProblemError(Problem("invalid_request", "the connection closed before the body was complete")) from e
    body = b"".join(chunks)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ProblemError(Problem("invalid_json", f"body is not valid JSON: {e}")) from e


def require_platform(request: web.Request) -> Platform:
    principal = request[PRINCIPAL]
    platform = request.app[GATEWAY].cfg.platform(principal.id) if principal.kind == "platform" else None
    if platform is None:
        raise ProblemError(Problem("forbidden", "only a platform may use this route"))
    return platform


def _accepted(p: Signed) -> dict[str, str]:
    return {"id": p.id, "status": "accepted", "correlation_id": p.correlation_id}


def idempotency_key(request: web.Request) -> str | None:
    keys = request.headers.getall("Idempotency-Key", [])
    if len(keys) > 1 or (keys and not header_safe(keys[0], MAX_IDEMPOTENCY_KEY)):
        raise ProblemError(Problem("invalid_request", f"at most one Idempotency-Key, of 1 to {MAX_IDEMPOTENCY_KEY} "
                                   "UTF-8 characters without control characters"))
    return keys[0] if keys else None


def require_identity(gw: ApiContext) -> None:
    """Fail closed: no new message is signed while this gateway's own certificate is not valid."""
    if gw.identity.problem is not None:
        raise ProblemError(gw.identity.problem)


def body_budget(request: web.Request, limit: int) -> int:
    """The request bytes to hold for this body: its Content-Length, or the route's limit when it is not given."""
    length = request.content_length
    return min(length, limit) if length is not None else limit


@contextlib.contextmanager
def admitted(request: web.Request, messages: int, nbytes: int) -> Iterator[None]:
    try:
        with request.app[ADMISSION].admit(messages, nbytes):
            yield
    except Overloaded as e:
        raise ProblemError(e.problem) from None


@contextlib.asynccontextmanager
async def one_message(request: web.Request) -> AsyncIterator[tuple[ApiContext, Platform, str | None, Any]]:
    """A platform's single message (POST /v1/messages, /v1/requests): the caller, its Idempotency-Key and the
    body, admitted as one message in flight until the block ends."""
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    require_identity(gw)
    key = idempotency_key(request)
    with admitted(request, 1, body_budget(request, gw.cfg.limits.max_body_bytes)):
        yield gw, platform, key, await read_json(request, gw.cfg.limits.max_body_bytes)


async def post_message(request: web.Request) -> web.Response:
    async with one_message(request) as (gw, platform, key, item):
        result = await gw.ingress.submit(platform, item, key)
    if isinstance(result, Problem):
        return problem_response(result)
    resp = json_response(_accepted(result), status=202)
    resp[ACCEPTED] = 1
    return resp


async def post_request(request: web.Request) -> web.Response:
    """POST /v1/requests: one request type, held until its reply arrives or its deadline passes (README
    "Request-reply"); the body is a message as for POST /v1/messages, plus an optional `deadline_ms`."""
    async with one_message(request) as (gw, platform, key, doc):
        if not isinstance(doc, dict):
            return problem_response(Problem("invalid_request", "a request is a JSON object {type, to, payload, ...}"))
        message = dict(doc)
        deadline_ms = message.pop("deadline_ms", None)
        outcome = await gw.request_reply.call(platform.id, message, deadline_ms=deadline_ms, idempotency_key=key)
    timeout = outcome.problem()
    if timeout is not None:
        return problem_response(timeout)
    return json_response({"message_id": outcome.message_id, "status": outcome.status, "reply": outcome.reply,
                          "elapsed_ms": outcome.elapsed_ms})


async def get_request(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    return json_response(gw.request_reply.status(platform.id, request.match_info["id"]))


async def post_batch(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    require_identity(gw)
    with admitted(request, 0, body_budget(request, gw.cfg.limits.max_batch_body_bytes)):
        doc = await read_json(request, gw.cfg.limits.max_batch_body_bytes)
        items = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items:
            return problem_response(Problem("invalid_request",
                                            'body must be {"messages": [ ... ]} with 1 or more items'))
        if len(items) > gw.cfg.limits.batch_max:
            return problem_response(Problem("too_large", f"{len(items)} messages exceed the batch limit of "
                                                          f"{gw.cfg.limits.batch_max}"))
        with admitted(request, len(items), 0):
            results = await gw.ingress.submit_batch(platform, items)
    out = [
        {"index": i, "status": 202, "id": r.id, "correlation_id": r.correlation_id}
        if isinstance(r, Signed) else {"index": i, **r.body()}
        for i, r in enumerate(results)
    ]
    accepted = sum(1 for r in results if isinstance(r, Signed))
    # 207: each item has its own status; a batch the broker did not acknowledge is a 503 that still lists
    # every item with its id, since some may have reached the broker before it stopped answering.
    if accepted == 0 and any(isinstance(r, Problem) and r.code == "broker_unavailable" for r in results):
        problem = Problem("broker_unavailable", "the broker did not acknowledge the batch; GET /v1/messages/{id} "
                          "shows what became of each message")
        resp = web.Response(status=503, body=orjson.dumps({**problem.body(), "results": out}),
                            content_type="application/problem+json")
        resp[PROBLEM] = problem  # counted and logged once, as the request's refusal
        return resp
    for r in results:  # a 207: the request is answered, each refused message counted by its code
        if isinstance(r, Problem):
            gw.metrics.refused.labels(r.code).inc()
    resp = json_response({"accepted": accepted, "rejected": len(results) - accepted, "results": out}, status=207)
    resp[ACCEPTED] = accepted
    return resp


async def get_message(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = request[PRINCIPAL]
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


def inbox_query(query: Mapping[str, str]) -> tuple[int, float]:
    """`max` (an integer 1..MAX_PULL, default 100) and `wait` (finite seconds 0..MAX_WAIT_S, default 0). Out of
    range is refused, not clamped: a client asking for an hour would otherwise silently get thirty seconds."""
    raw_max, raw_wait = query.get("max", "100"), query.get("wait", "0")
    limit = int(raw_max) if _DIGITS.fullmatch(raw_max) else 0
    try:
        wait = float(raw_wait)
    except ValueError:
        wait = math.nan
    if not 1 <= limit <= MAX_PULL or not (math.isfinite(wait) and 0 <= wait <= MAX_WAIT_S):
        raise ProblemError(Problem("invalid_request", f"max must be an integer from 1 to {MAX_PULL} and wait a "
                                   f"finite number of seconds from 0 to {MAX_WAIT_S:g}"))
    return limit, wait


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def get_inbox(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    limit, wait = inbox_query(request.query)
    deadline = time.monotonic() + wait
    stopping = request.app[STOPPING]
    items: list[InboxItem] = []
    # Nothing is leased for a client that has gone; a shutdown ends the wait at once.
    while not _client_gone(request):
        rung = gw.state.inbox_bell.armed()  # before the lease: a delivery landing after it still wakes us
        items = gw.state.lease_inbox(platform.id, limit)
        now = time.monotonic()
        if items or now >= deadline or stopping.is_set():
            break
        # Woken by this gateway's next delivery; the lease query is repeated every INBOX_POLL_S regardless, for
        # what another replica delivered and for leases that expired.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(INBOX_POLL_S, deadline - now)):
                await rung.wait()
    messages = [inbox_document(i.id, i.type, i.from_region, i.envelope, i.signature, gw.opener, i.late_reply_to,
                               embed=True) for i in items]
    return json_response({"messages": messages})


async def post_inbox_ack(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    doc = await read_json(request, gw.cfg.limits.max_body_bytes)
    ids = doc.get("ids") if isinstance(doc, dict) else None
    if not isinstance(ids, list) or len(ids) > MAX_PULL or not all(isinstance(i, str) for i in ids):
        return problem_response(Problem("invalid_request", f'body must be {{"ids": ["<message id>", ...]}} with at '
                                        f"most {MAX_PULL} ids"))
    return json_response({"acked": gw.state.ack_inbox(platform.id, ids)})


def index_target(gw: ApiContext) -> str:
    """The audit index the gateway's routes answer from: `audit_index`, else a SQLite file beside the state."""
    return gw.cfg.audit_index or str(gw.cfg.state_path.with_name("audit-index.sqlite"))


async def get_usage(request: web.Request) -> web.Response:
    """Who used a holder's data or licences here, when and for what (README "Government services across
    regions"): for a platform of this region, by the holder's pseudonyms (`subject`, repeatable)."""
    gw = request.app[GATEWAY]
    require_platform(request)
    subjects = request.query.getall("subject", [])
    if not subjects or len(subjects) > MAX_SUBJECTS or not all(PSEUDONYM.fullmatch(s) for s in subjects):
        return problem_response(Problem("invalid_request", f"1 to {MAX_SUBJECTS} `subject` parameters, each a "
                                        "holder's pseudonym (64 lowercase hex characters)"))
    try:
        doc = await current_usage(gw.cfg.kafka, index_target(gw), gw.cfg.region, subjects, trust=gw.audit_trust)
    except IndexUnavailable as e:
        return problem_response(Problem("index_unavailable", str(e)))
    return json_response(doc)


async def get_audit_message(request: web.Request) -> web.Response:
    """The message's journey and its conversation's across all regions, from the audit index (as `yrdx audit
    trace --json`), brought up to date from yrdx.audit first (for at most two seconds, off the event loop)."""
    gw = request.app[GATEWAY]
    principal = request[PRINCIPAL]
    if AUDIT_SCOPE not in principal.scopes:
        return problem_response(Problem("forbidden", f"the {AUDIT_SCOPE} scope is required"))
    try:
        doc = await current_trace(gw.cfg.kafka, index_target(gw), request.match_info["id"], trust=gw.audit_trust)
    except IndexUnavailable as e:
        return problem_response(Problem("index_unavailable", str(e)))
    if doc is None:
        return problem_response(Problem("not_found", "no audit record names this message id"))
    return json_response(doc)


async def post_file(request: web.Request) -> web.Response:
    """Stream a file to `to` as sealed chunks (gateway/files/sender.py); 201 with its claim check once the broker
    acknowledged all of it. The body is read as it arrives: each read must come within BODY_TIMEOUT_S."""
    gw = request.app[GATEWAY]
    require_platform(request)
    require_identity(gw)
    to = request.query.get("to", "")
    if to not in REGIONS or to == gw.cfg.region or not gw.file_sender.can_send_to(to):
        return problem_response(Problem("unknown_region", "to must be another region of the exchange, with its "
                                        "key in trust.encryption_keys (files travel sealed)"))
    # The header as sent (aiohttp's content_type would turn a malformed one into text/plain); parameters dropped.
    media_type = request.headers.get("Content-Type", "application/octet-stream").split(";", 1)[0].strip().lower()
    if not MEDIA_TYPE.fullmatch(media_type):
        return problem_response(Problem("invalid_request", "Content-Type must be a media type, type/subtype"))
    limit = gw.file_sender.max_bytes
    if request.content_length is not None and request.content_length > limit:
        return problem_response(Problem("too_large", f"file of {request.content_length} bytes exceeds {limit}"))

    async def read(n: int) -> bytes:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.content.read(n)

    try:
        with admitted(request, 0, WINDOW * CHUNK_BYTES):
            manifest = await gw.file_sender.send(to, media_type, read)
    except TooLarge as e:
        return problem_response(Problem("too_large", str(e)))
    except TimeoutError:
        return problem_response(Problem("request_timeout", f"no part of the body arrived for {BODY_TIMEOUT_S:g} s"))
    except (web.RequestPayloadError, ConnectionError):
        return problem_response(Problem("invalid_request", "the body is not validly framed, or was cut off"))
    except BrokerUnavailable as e:
        return problem_response(Problem("broker_unavailable", f"the broker did not acknowledge the file: {e}"))
    log.info("file sent", extra={"file_id": manifest.file_id, "to": to, "size": manifest.size})
    return json_response(manifest.claim_check(), status=201)


async def get_file(request: web.Request) -> web.StreamResponse:
    """A received file, streamed and opened chunk by chunk, to a platform that received a message naming it."""
    gw = request.app[GATEWAY]
    platform = require_platform(request)
    file_id = request.match_info["id"]
    stored = gw.files.status(file_id)
    if (stored is None or stored.status != "complete" or gw.opener is None
            or not gw.files.granted(file_id, platform.id)):
        return problem_response(Problem("not_found", "no complete file with this id was delivered to you"))
    digest = stored.claim["digest"]
    resp = web.StreamResponse(headers={"Content-Type": stored.claim["media_type"],
                                       headers.FILE_DIGEST: f"{digest['alg']}={digest['value']}"})
    resp.content_length = stored.claim["size"]
    await resp.prepare(request)
    chunks = gw.files.chunks(stored, gw.opener)
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    health = gw.egress_health
    # Every check reads state kept current by the gateway's own tasks: none waits on the network here.
    checks = {"broker": gw.broker_ok, "trust": bool(gw.trust.known()), "schemas": bool(gw.registry.types()),
              "identity": gw.identity.problem is None, "state": gw.state.available,
              "consumer": gw.consumer_running and gw.broker_ok and health.polled_recently(),
              "egress_progress": health.healthy()}
    failing = [name for name, ok in checks.items() if not ok]
    doc: dict[str, Any] = {"ready": not failing, "checks": checks, "failing": failing}
    if gw.identity.problem is not None:
        doc["identity"] = {"code": gw.identity.problem.code, "detail": gw.identity.problem.detail}
    if not checks["egress_progress"]:  # which partitions stand still, and how often the loop restarted
        doc["egress"] = {"stalled_partitions": health.stalled_partitions(), "recent_restarts": len(health.restarts)}
    return json_response(doc, status=503 if failing else 200)


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    token = gw.metrics_token
    try:
        given = one_authorization(request.headers.getall("Authorization", [])) or ""
    except AuthError as e:
        raise ProblemError(Problem("unauthenticated", str(e))) from e
    # surrogateescape: a non-UTF-8 header byte compares as the byte it was, instead of failing to encode
    if token is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()):
        raise ProblemError(Problem("unauthenticated", "metrics need the operator bearer token"))
    gw.metrics.inbox_depth.set(gw.state.inbox_depth())
    return web.Response(body=generate_latest(gw.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _end_long_polls(app: web.Application) -> None:
    app[STOPPING].set()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


def _openapi_route(gw: ApiContext) -> Handler:
    """GET /openapi.json (no token): the OpenAPI 3.1 document of this gateway, built once."""
    body = orjson.dumps(openapi.document(region=gw.cfg.region, limits=gw.cfg.limits, max_pull=MAX_PULL,
                                         max_wait_s=MAX_WAIT_S, message_types=gw.registry.types(),
                                         max_file_bytes=gw.cfg.files.max_bytes))

    async def serve_openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return serve_openapi


def build_app(gw: ApiContext, extra_routes: Sequence[web.RouteDef] = ()) -> web.Application:
    """The gateway's routes, and `extra_routes` (the facades' routes, gateway/http/facades.py)."""
    app = web.Application(middlewares=[answer_problems, authenticate],
                          client_max_size=gw.cfg.limits.max_batch_body_bytes + 1)
    app[GATEWAY] = gw
    app[STOPPING] = asyncio.Event()
    limits = gw.cfg.limits
    app[ADMISSION] = Admission(limits.max_in_flight_messages, limits.max_in_flight_bytes,
                               limits.max_queue_wait_ms / 1000, gw.ingress.queue_wait)
    app.on_shutdown.append(_end_long_polls)
    app.on_response_prepare.append(_server_header)
    app.router.add_post("/v1/token", post_token)
    app.router.add_post("/v1/messages", post_message)
    app.router.add_post("/v1/messages/batch", post_batch)
    app.router.add_get("/v1/messages/{id}", get_message)
    app.router.add_get("/v1/inbox", get_inbox)
    app.router.add_post("/v1/inbox/ack", post_inbox_ack)
    app.router.add_post("/v1/requests", post_request)
    app.router.add_get("/v1/requests/{id}", get_request)
    app.router.add_get("/v1/audit/messages/{id}", get_audit_message)
    app.router.add_get("/v1/usage", get_usage)
    app.router.add_post("/v1/files", post_file)
    app.router.add_get("/v1/files/{id}", get_file)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", _openapi_route(gw))
    app.router.add_routes(extra_routes)
    return app


# --- the HTTP protocol: malformed requests, refused bodies ----------------------------------------------------


class _Protocol(RequestHandler):
    """aiohttp's connection handler, with two changes. A request aiohttp cannot parse (a bad header line, both
    Content-Length and Transfer-Encoding, a header line over MAX_LINE_BYTES ...) gets a problem+json 400 and one
    warning line, where aiohttp logged an ERROR traceback and echoed the offending bytes (perhaps a token). And a
    response sent while the request body is still arriving (a 413, a 401) says `Connection: close` and is
    followed by a FIN; what the client still sends is dropped for LINGER_S, then the connection closes. (Closing
    at once, with unread data, would reset the connection and the client might lose the answer; aiohttp's own
    lingering read for ten seconds, holding up shutdown as long, and logged a traceback for a body whose
    framing broke meanwhile.)"""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:  # a bug in a handler: keep aiohttp's traceback
            return super().handle_error(request, status, exc, message)
        reason = type(exc).__name__ if exc is not None else "unknown"
        log.warning("malformed HTTP request refused", extra={"status": status, "reason": reason})
        resp = problem_response(Problem("invalid_request", f"malformed HTTP request ({reason})"))
        resp.headers["Server"] = SERVER  # no app, so no on_response_prepare signal, for a request that did not parse
        resp.force_close()
        return resp

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        unread = not request.content.is_eof()
        if unread and not resp.prepared:
            resp.force_close()  # Connection: close
        done = await super().finish_response(request, resp, start_time)
        if unread:
            await self._drop_rest(request.content)
        return done

    async def _drop_rest(self, body: StreamReader) -> None:
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError, web.RequestPayloadError):
            async with asyncio.timeout(LINGER_S):
                while await body.readany():
                    pass
        self.force_close()


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts and freezes the app
        return _Server(made.request_handler, request_factory=made.request_factory,
                       handler_cancellation=made.handler_cancellation, **self._kwargs)


def make_runner(gw: ApiContext, extra_routes: Sequence[web.RouteDef] = ()) -> web.AppRunner:
    """The gateway's HTTP server with the limits above."""
    return _Runner(build_app(gw, extra_routes), access_log=None, handle_signals=False,
                   keepalive_timeout=HEADER_TIMEOUT_S, max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES,
                   max_headers=MAX_HEADERS)
