"""The reply step of egress (after authorize and dedupe, before deliver): a result whose correlation id names a
request of this region, sent back by the region the request went to and of the request's reply type, answers
that request instead of being delivered as a fresh message.

The request's row in the state store decides, once, whether the result came in time (pending -> replied) or
late. With several replicas the reply lands on whichever replica consumed it; the replica that holds the waiting
call learns it from the row (requests.py's watcher reads it), this one wakes a local waiter at once.

A late result of a type with compensation was undone by the gateway's compensating message: it is recorded
(late_result, audited) and never delivered. A late result of a type without compensation undid nothing, so it
is recorded and delivered to the platform as any message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.relay.checks import Verified
from gateway.relay.outcomes import BatchOutcomes
from gateway.relay.requests_table import ReplyTable
from gateway.state import Decision, Reply, RequestRecord, StateStore

log = logging.getLogger(__name__)

# What the reply step made of a result: consumed (it answered the call, or a late result that must not be
# delivered), deliver (not an answer), or late (deliver it, marked as the late result of its request).
Taken = Literal["consumed", "deliver", "late"]


class _Waiting:
    __slots__ = ("count", "event", "opened", "row")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0
        self.row: RequestRecord | None = None  # the row as the waker left it, when it knew it
        self.opened: Any = None  # the reply's sealed payload as egress opened it (None: not sealed, or unknown)


class Waiters:
    """The calls of this process waiting on a request, by correlation id; a retry shares the first call's."""

    def __init__(self) -> None:
        self._calls: dict[str, _Waiting] = {}

    def join(self, correlation_id: str) -> asyncio.Event:
        waiting = self._calls.setdefault(correlation_id, _Waiting())
        waiting.count += 1
        return waiting.event

    def leave(self, correlation_id: str) -> None:
        waiting = self._calls[correlation_id]
        waiting.count -= 1
        if waiting.count <= 0:
            del self._calls[correlation_id]

    def waiting(self) -> list[str]:
        """The correlation ids some call of this process waits on."""
        return list(self._calls)

    def wake(self, correlation_id: str, row: RequestRecord | None = None, opened: Any = None) -> None:
        """Wake the calls waiting on `correlation_id`; `row`: the request as it now stands in the store, which
        the calls then take instead of reading it back; `opened`: its reply's sealed payload, already opened."""
        waiting = self._calls.get(correlation_id)
        if waiting is not None:
            waiting.row = row
            waiting.opened = opened
            waiting.event.set()

    def settled_row(self, correlation_id: str) -> RequestRecord | None:
        """The row the waker handed over (None: it did not know it, or nobody woke the calls yet)."""
        waiting = self._calls.get(correlation_id)
        return None if waiting is None else waiting.row

    def opened_reply(self, correlation_id: str) -> Any:
        """The sealed payload of the reply in the row the waker handed over, as egress opened it (None: unknown;
        every wake sets it, so it always goes with settled_row)."""
        waiting = self._calls.get(correlation_id)
        return None if waiting is None else waiting.opened


class ReplyStep:
    def __init__(self, cfg: GatewayConfig, table: ReplyTable, state: StateStore, audit: AuditTrail,
                 metrics: Metrics, waiters: Waiters) -> None:
        self._cfg = cfg
        self._table = table
        self._state = state
        self._audit = audit
        self._metrics = metrics
        self.waiters = waiters

    def match(self, verified: Sequence[Verified]) -> dict[str, RequestRecord]:
        """message id -> the request it answers, for the batch's results (one state read per batch, none when
        the batch holds no reply type)."""
        candidates = [v for v in verified if v.env.type in self._table.reply_types]
        if not candidates:
            return {}
        rows = self._state.requests([v.env.correlation_id for v in candidates])
        found: dict[str, RequestRecord] = {}
        for v in candidates:
            row = rows.get(v.env.correlation_id)
            if row is not None and row.to_region == v.env.sender and row.reply_type == v.env.type:
                found[v.env.id] = row
        return found

    def answer(self, replies: Sequence[tuple[Verified, RequestRecord]]) -> dict[str, float]:
        """Answer the pending requests that a batch's results name, in one transaction: message id -> when, for
        the results that answered theirs (the others came after the deadline, or second)."""
        pending = [(v, r) for v, r in replies if r.status == "pending"]
        if not pending:
            return {}
        now = time.time()
        won = self._state.answer_requests(
            [(r.correlation_id, _reply(v), Decision(v.env.id, "delivered", v.source)) for v, r in pending], now)
        return {v.env.id: now for (v, _), ok in zip(pending, won, strict=True) if ok}

    def take(self, v: Verified, request: RequestRecord, out: BatchOutcomes, answered_at: float | None) -> Taken:
        """Apply one result to its request (see Taken); `answered_at`: when `answer` let it answer its request
        (None: it did not)."""
        reply = _reply(v)
        if answered_at is not None:
            platform = self._cfg.platform(request.platform)
            if platform is not None:
                out.delivered(platform, v, "reply")  # audit (delivered, mode reply), metrics and the receipt
            # The row as the UPDATE left it, so that the waiting call needs no read of its own.
            self.waiters.wake(request.correlation_id,
                              replace(request, status="replied", replied_at=answered_at, reply=reply),
                              v.env.payload if v.env.sealed is not None else None)
            return "consumed"
        now = time.time()
        if request.status == "pending":  # the deadline won the race a moment ago: this result is late
            current = self._state.requests([request.correlation_id]).get(request.correlation_id)
            request = current or request
        if request.status not in ("timed_out", "compensated") or request.reply is not None:
            return "deliver"  # a further result of an answered request: an ordinary message
        if not self._state.late_result(request.correlation_id, reply, now):
            return "deliver"
        compensated = request.compensation_type is not None
        self._audit.append("late_result", v.env.id, v.sha256, v.env.correlation_id, request=request.message_id or "",
                           type=v.env.type, sender=v.env.sender, delivered="false" if compensated else "true")
        self._metrics.late_results.labels(request.type).inc()
        log.warning("late result for a timed-out request", extra={
            "message_id": v.env.id, "type": v.env.type, "from": v.env.sender, "request_id": request.message_id,
            "correlation_id": v.env.correlation_id, "outcome": "withheld" if compensated else "delivered"})
        self.waiters.wake(request.correlation_id)
        if not compensated:
            return "late"
        # Consumed: marked delivered (a second copy is a duplicate), and the sender gets its receipt.
        self._state.mark_seen([Decision(v.env.id, "delivered", v.source)])
        out.receipt(v, "delivered")
        return "consumed"


def _reply(v: Verified) -> Reply:
    return Reply(v.env.id, v.env.type, v.env.sender, v.record.value, v.signature)
