"""Request-reply over the async relay (README "Request-reply"): send a request type and wait for the result that
answers it, until a deadline.

claim the correlation id -> send (ingress) -> wait for the row to leave pending -> on deadline: timed_out, and
for a type with compensation the compensating message (requests_compensation.py).

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
from gateway.relay.inbox_document import inbox_document
from gateway.relay.ingress import Ingress
from gateway.relay.requests_compensation import Compensator
from gateway.relay.requests_replies import Waiters
from gateway.relay.requests_table import ReplyRule, ReplyTable
from gateway.relay.signed import Signed
from gateway.state import NewRequest, RequestRecord, StateStore, StateUnavailable
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
        request = self._claim(platform.id, rule, draft.to, correlation_id, wait_ms, idempotency_key)
        opened: Any = None  # the reply's sealed payload, when egress handed it over opened
        if request.status == "pending":
            # Joined before the send, so that a reply quicker than the send's own return still wakes this call.
            event = self._waiters.join(correlation_id)
            try:
                sent = await self._send(platform, {**message, "correlation_id": correlation_id}, request, rule,
                                        idempotency_key)
                request = await self._wait(event, correlation_id, request.deadline_at) or request
                opened = self._waiters.opened_reply(correlation_id)
            finally:
                self._waiters.leave(correlation_id)
            if request.status == "pending":
                request = await self._deadline(request.correlation_id) or request
            message_id = sent.id
        else:  # a retry of a request already decided: nothing is sent again
            message_id = request.message_id or ""
        outcome = self._outcome(request, message_id, started, opened)
        self._metrics.request_reply_seconds.labels(rule.request_type, outcome.status).observe(
            outcome.elapsed_ms / 1000)
        return outcome

    def _claim(self, platform_id: str, rule: ReplyRule, to: str, correlation_id: str, wait_ms: int,
               idempotency_key: str | None) -> RequestRecord:
        now = time.time()
        claim = NewRequest(correlation_id, platform_id, rule.request_type, to, rule.reply_type,
                           now + wait_ms / 1000, idempotency_key,
                           rule.compensation.type if rule.compensation is not None else None, now)
        request = self._state.open_request(claim)
        ours = (request.created_at, request.deadline_at, request.platform) == (now, claim.deadline_at, platform_id)
        retry = (request.platform == platform_id and idempotency_key is not None
                 and request.idempotency_key == idempotency_key and request.type == rule.request_type)
        if not (ours or retry):
            raise ProblemError(Problem("invalid_request", "correlation_id already names another request of this "
                                                          "gateway; a request needs a correlation id of its own"))
        return request

    async def _send(self, platform: Platform, item: dict[str, Any], request: RequestRecord, rule: ReplyRule,
                    idempotency_key: str | None) -> Signed:
        try:
            result = await self._ingress.submit(platform, item, idempotency_key)
        except BaseException:
            if request.message_id is None:
                self._forget(request.correlation_id)
            raise
        if isinstance(result, Problem):
            if result.message_id is not None:  # it may have reached the broker: its deadline still applies
                self._sent(request, rule, result.message_id, item)
            elif request.message_id is None:
                self._forget(request.correlation_id)
            raise ProblemError(result)
        self._sent(request, rule, result.id, item)
        return result

    def _sent(self, request: RequestRecord, rule: ReplyRule, message_id: str, item: dict[str, Any]) -> None:
        compensation = None
        if rule.compensation is not None:
            compensation = orjson.dumps(rule.compensation.render(
                item["payload"], message_id=message_id, correlation_id=request.correlation_id,
                msg_type=rule.request_type)).decode()
        self._state.request_sent(request.correlation_id, message_id, compensation)

    def _forget(self, correlation_id: str) -> None:
        try:
            self._state.drop_request(correlation_id)
        except StateUnavailable:  # the claim stays; a retry with the same Idempotency-Key still finds it
            log.warning("request claim not released", extra={"correlation_id": correlation_id})

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
