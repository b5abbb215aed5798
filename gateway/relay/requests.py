"""Request-reply over the async relay (README "Request-reply"): send a request type and wait for the result that
answers it, until a deadline.

sign -> claim the correlation id (with the message id, the compensation and the Idempotency-Key, one transaction)
-> publish (ingress) -> wait for the row to leave pending -> on deadline: timed_out, and for a type with
compensation the compensating message (requests_compensation.py).

The request's row in the state store is the one place the outcome is decided (pending -> replied | timed_out,
once), so the reply may land on any replica of the region (requests_replies.py records it there): a waiting call
is woken at once by its own process's egress, and otherwise by the process's one watcher, which reads the rows of
all waiting calls in one query every POLL_S (one read per interval, however many calls wait: a read per call and
interval grew with the queue and fed it). A sweeper on every replica times out requests whose waiting call is
gone (a crash, a client that left) and retries compensations that could not be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig, Platform
from gateway.crypto.seal import Opener
from gateway.metrics import Metrics
from gateway.relay.idempotency import Recalled
from gateway.relay.inbox_document import inbox_document
from gateway.relay.ingress import Ingress
from gateway.relay.requests_compensation import Compensator
from gateway.relay.requests_replies import Waiters
from gateway.relay.requests_table import ReplyRule, ReplyTable
from gateway.relay.signed import Signed
from gateway.state import NewRequest, Opened, RequestRecord, StateStore, StateUnavailable
from gateway.wire import envelope
from gateway.wire.problems import Problem, ProblemError

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the watcher reads the waiting calls' rows (a reply consumed by another replica)
SWEEP_EVERY_S = 1.0
SWEEP_GRACE_S = 1.0  # the waiting call times its own request out; the sweeper only those left after this
COMPENSATION_RETRY_S = 10.0  # a compensation not recorded this long after the deadline is sent again
SWEEP_BATCH = 100


@dataclass(frozen=True, slots=True)
class CompensationRef:
    type: str
    message_id: str


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """What became of a request: `replied` with its reply (the result as the pull inbox shows it), or `timed_out`
    / `compensated` (the deadline passed; `compensation` names the message that undid it)."""

    message_id: str
    status: str
    reply: dict[str, Any] | None
    elapsed_ms: float
    compensation: CompensationRef | None

    def problem(self) -> Problem | None:
        """The `reply_timeout` problem of a request that got no reply in time; None when it was answered."""
        if self.status == "replied":
            return None
        extra: dict[str, Any] = {"message_id": self.message_id, "status_url": f"/v1/requests/{self.message_id}"}
        if self.compensation is not None:
            extra["compensation"] = {"type": self.compensation.type, "message_id": self.compensation.message_id}
        return Problem("reply_timeout", f"no reply within the deadline; the request is {self.status}",
                       message_id=self.message_id, extra=extra)


def fresh_correlation_id(platform_id: str, idempotency_key: str | None) -> str:
    """The correlation id of a request that names none: new for every request, and the same for every retry with
    one Idempotency-Key (so that the retry is recognised as the same request)."""
    if idempotency_key is None:
        return envelope.uuid7()
    return "req-" + hashlib.sha256(f"{platform_id}\x00{idempotency_key}".encode()).hexdigest()[:40]


def _timestamp(at: float) -> str:
    return envelope.utc_timestamp(datetime.fromtimestamp(at, UTC))


class RequestReply:
    def __init__(self, cfg: GatewayConfig, table: ReplyTable, ingress: Ingress, state: StateStore,
                 audit: AuditTrail, metrics: Metrics, opener: Opener | None, waiters: Waiters, *,
                 watch_replicas: bool = True) -> None:
        """`watch_replicas`: run the watcher (the store is shared with other replicas, whose egress may take a
        reply for a call of this process); False for a store only this process uses (SQLite)."""
        self._cfg = cfg
        self.table = table
        self._ingress = ingress
        self._state = state
        self._audit = audit
        self._metrics = metrics
        self._opener = opener
        self._waiters = waiters
        self._compensator = Compensator(cfg, ingress, state, metrics)
        self._watch_replicas = watch_replicas
        self._watcher: asyncio.Task[None] | None = None  # runs while calls wait (_watch)

    # --- the call --------------------------------------------------------------------------------------------

    async def call(self, platform_id: str, message: dict[str, Any], *, deadline_ms: int | None = None,
                   idempotency_key: str | None = None) -> ReplyOutcome:
        """Send `message` (as for POST /v1/messages) and wait for its reply. A refusal raises ProblemError (the
        codes of POST /v1/messages); a deadline that passed returns status timed_out or compensated."""
        started = time.monotonic()
        platform = self._cfg.platform(platform_id)
        if platform is None:
            raise ProblemError(Problem("forbidden", "only a platform may use this route"))
        draft = self._ingress.read(message)
        if isinstance(draft, Problem):
            raise ProblemError(draft)
        rule = self.table.rule(draft.type)
        if rule is None:
            raise ProblemError(Problem("invalid_request", f"{draft.type} is not a request type (its schema has no "
                                                          "x-reply); send it with POST /v1/messages"))
        wait_ms = rule.wait_ms(deadline_ms)
        if isinstance(wait_ms, Problem):
            raise ProblemError(wait_ms)
        # Checked before the correlation id is claimed, so that a refused request leaves no row behind.
        refused = self._ingress.authorize(platform, draft) or self._ingress.validate(draft)
        if refused is not None:
            raise ProblemError(refused)
        correlation_id = draft.correlation_id or fresh_correlation_id(platform.id, idempotency_key)
        item = {**message, "correlation_id": correlation_id}
        request, fresh = await self._open(platform, rule, item, wait_ms, idempotency_key)
        message_id = request.message_id or ""
        opened: Any = None  # the reply's sealed payload, when egress handed it over opened
        if request.status == "pending":
            # Joined before the publish, so that a reply quicker than the publish's own return still wakes this call.
            event = self._waiters.join(correlation_id)
            try:
                message_id = await self._send(platform, item, fresh, idempotency_key)
                request = await self._wait(event, correlation_id, request.deadline_at) or request
                opened = self._waiters.opened_reply(correlation_id)
            finally:
                self._waiters.leave(correlation_id)
            if request.status == "pending":
                request = await self._deadline(request.correlation_id) or request
        outcome = self._outcome(request, message_id, started, opened)
        self._metrics.request_reply_seconds.labels(rule.request_type, outcome.status).observe(
            outcome.elapsed_ms / 1000)
        return outcome

    async def _open(self, platform: Platform, rule: ReplyRule, item: dict[str, Any], wait_ms: int,
                    idempotency_key: str | None) -> tuple[RequestRecord, Signed | None]:
        """The request's row, and its signed message when this call claimed the row and must publish it (None:
        a retry of a request claimed before, which `_send` resends through its Idempotency-Key)."""
        opened, fresh = await self._claim(platform, rule, item, wait_ms, idempotency_key)
        if opened.request is None:  # its key named another message a moment ago: the second claim recalls that one
            opened, fresh = await self._claim(platform, rule, item, wait_ms, idempotency_key)
        request = opened.request
        if request is None:
            raise ProblemError(Problem("idempotency_conflict", "this Idempotency-Key was used for another request"))
        if opened.ours:
            return request, fresh
        retry = (request.platform == platform.id and idempotency_key is not None
                 and request.idempotency_key == idempotency_key and request.type == rule.request_type)
        if not retry:
            raise ProblemError(Problem("invalid_request", "correlation_id already names another request of this "
                                                          "gateway; a request needs a correlation id of its own"))
        return request, None

    async def _claim(self, platform: Platform, rule: ReplyRule, item: dict[str, Any], wait_ms: int,
                     idempotency_key: str | None) -> tuple[Opened, Signed | None]:
        """Sign the request's message, then claim its correlation id with the message id, the rendered
        compensation and the Idempotency-Key, in one transaction before anything is published: a crash after the
        publish leaves a row that its deadline and compensation still apply to."""
        correlation_id = item["correlation_id"]
        # A retry is recalled by its key, not signed again; its claim then finds the row that holds the id.
        got = await self._ingress.sign_single(platform, item, idempotency_key)
        if isinstance(got, Problem):
            raise ProblemError(got)
        if isinstance(got, Recalled):  # the key named a message already: claimed with that message, no new one
            if isinstance(got.answer, Problem):
                raise ProblemError(got.answer)
            signed, key, publish = got.answer, None, not got.final
        else:
            signed, key, publish = got.signed, got.key, True
        now = time.time()
        compensation = None
        if rule.compensation is not None:
            compensation = orjson.dumps(rule.compensation.render(
                item["payload"], message_id=signed.id, correlation_id=correlation_id,
                msg_type=rule.request_type)).decode()
        claim = NewRequest(correlation_id, platform.id, rule.request_type, signed.to, rule.reply_type,
                           now + wait_ms / 1000, idempotency_key,
                           rule.compensation.type if rule.compensation is not None else None, now,
                           signed.id, compensation)
        opened = self._state.open_request(claim, key)
        return opened, signed if publish and opened.ours else None

    async def _send(self, platform: Platform, item: dict[str, Any], fresh: Signed | None,
                    idempotency_key: str | None) -> str:
        """Publish the message this call claimed (`fresh`), or, for a retry of a pending request, resend its
        message through the Idempotency-Key (the same id and bytes, unless it is on Kafka already); its id. A
        refusal leaves the claim as it is: the message may have reached the broker, so its deadline and its
        compensation still apply, and a retry with the same key resends it."""
        if fresh is not None:
            problem = await self._ingress.publish_one(fresh)
            if problem is not None:
                raise ProblemError(problem)
            return fresh.id
        result = await self._ingress.submit(platform, item, idempotency_key)
        if isinstance(result, Problem):
            raise ProblemError(result)
        return result.id

    async def _wait(self, event: asyncio.Event, correlation_id: str, deadline_at: float) -> RequestRecord | None:
        """The request's row once it left pending (`event` set by this process's egress or by the watcher), or at
        its deadline."""
        if self._watch_replicas and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.create_task(self._watch(), name="request-watcher")
        remaining = deadline_at - time.time()
        if remaining > 0 and not event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # a timer, not a task per call (wait_for in 3.11)
                    await event.wait()
        settled = self._waiters.settled_row(correlation_id) if event.is_set() else None
        return settled or self._state.requests([correlation_id]).get(correlation_id)

    async def _watch(self) -> None:
        """While calls of this process wait: every POLL_S, one read of which of their rows left pending (a reply
        consumed by another replica, or another replica's sweeper), and a wake for each."""
        while waiting := self._waiters.waiting():
            try:
                settled = self._state.settled_requests(waiting)
            except StateUnavailable as e:  # the calls still end at their deadlines; the next read may succeed
                log.warning("request watch skipped", extra={"error": str(e)})
                settled = set()
            for correlation_id in settled:
                self._waiters.wake(correlation_id)
            await asyncio.sleep(POLL_S)

    async def _deadline(self, correlation_id: str) -> RequestRecord | None:
        """pending -> timed_out (unless a reply won the race), then its compensation; the row as it ends."""
        if self._state.settle_request(correlation_id, None, time.time()):
            request = self._state.requests([correlation_id]).get(correlation_id)
            if request is not None:
                await self._timed_out(request)
                if request.compensation_type is None:  # nothing changed it since the read
                    return request
        return self._state.requests([correlation_id]).get(correlation_id)

    async def _timed_out(self, request: RequestRecord) -> None:
        """This call (of all replicas) moved the request to timed_out: audit, count, compensate."""
        comp = request.compensation_type
        self._audit.append("rejected", request.message_id or "", None, request.correlation_id,
                           reason="reply_timeout", type=request.type, to=request.to_region,
                           compensation=comp or "")
        self._metrics.reply_timeouts.labels(request.type).inc()
        log.warning("request timed out", extra={"message_id": request.message_id, "type": request.type,
                                                "to": request.to_region, "correlation_id": request.correlation_id,
                                                "outcome": "timed_out"})
        if comp is not None:
            await self._compensator.send(request)

    def _outcome(self, request: RequestRecord, message_id: str, started: float, opened: Any = None) -> ReplyOutcome:
        elapsed_ms = round((time.monotonic() - started) * 1000, 3)
        reply = self.reply_document(request, opened) if request.status == "replied" else None
        comp = (CompensationRef(request.compensation_type, request.compensation_id)
                if request.compensation_type is not None and request.compensation_id is not None else None)
        status = request.status if request.status != "late_result" else (
            "compensated" if comp is not None else "timed_out")  # what this call saw: no reply in time
        return ReplyOutcome(message_id or request.message_id or "", status, reply, elapsed_ms, comp)

    def reply_document(self, request: RequestRecord, opened: Any = None) -> dict[str, Any] | None:
        """`opened`: the reply's sealed payload as egress opened it (None: open it here)."""
        r = request.reply
        return None if r is None else inbox_document(r.id, r.type, r.from_region, r.envelope, r.signature,
                                                     self._opener, opened=opened)

    # --- status ---------------------------------------------------------------------------------------------

    def status(self, platform_id: str, message_id: str) -> dict[str, Any]:
        """GET /v1/requests/{message_id}: the request as it stands, for the platform that sent it."""
        request = self._state.request_by_id(message_id)
        if request is None or request.platform != platform_id:
            raise ProblemError(Problem("not_found", "no request with this id was sent by you through this gateway"))
        doc: dict[str, Any] = {"message_id": message_id, "type": request.type, "status": request.status,
                               "created_at": _timestamp(request.created_at)}
        if request.reply is not None:
            doc["reply"] = self.reply_document(request)
        if request.replied_at is not None:
            doc["replied_at"] = _timestamp(request.replied_at)
        if request.compensation_type is not None and request.compensation_id is not None:
            doc["compensation"] = {"type": request.compensation_type, "message_id": request.compensation_id}
        return doc

    # --- the sweeper ----------------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Time out the requests nobody waits on any more, and send the compensations still owed; how many rows
        it acted on."""
        now = time.time()
        rows = self._state.overdue_requests(now - SWEEP_GRACE_S, now - COMPENSATION_RETRY_S, SWEEP_BATCH)
        for request in rows:
            if request.status == "pending":
                if self._state.settle_request(request.correlation_id, None, now):
                    fresh = self._state.requests([request.correlation_id]).get(request.correlation_id)
                    await self._timed_out(fresh or request)
            else:
                await self._compensator.send(request)
        return len(rows)

    async def run_sweeper(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.sweep()
            except StateUnavailable as e:
                log.warning("request sweep skipped", extra={"error": str(e)})
            try:
                await asyncio.wait_for(stopping.wait(), SWEEP_EVERY_S)
            except TimeoutError:
                pass
