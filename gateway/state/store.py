"""StateStore: the one interface through which the gateway keeps its state, in SQLite (embedded, one replica,
the default) or in PostgreSQL (shared by a region's replicas). The backends behave alike, call for call
(tests/unit/test_state_contract.py runs one suite against both); what each method promises is written here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from gateway.config import GatewayConfig
from gateway.state.doorbell import Doorbell
from gateway.state.retention import SWEEP_CHUNK, SWEEPS, TABLES, RetentionPolicy, Sweep
from gateway.state.rows import (
    Decision,
    IdempotentRequest,
    InboxDelivery,
    InboxItem,
    NewRequest,
    NewSent,
    Opened,
    ParkedMessage,
    ReceiptItem,
    Reply,
    RequestRecord,
    SentMessage,
    StateUnavailable,
)
from gateway.state.sqlite import SqliteBackend

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
JTI_GRACE_S = 60.0  # a used jti is kept this long after its token's exp (the token's leeway is 5 s)
# A purge reads the whole jti table on SQLite (an index on exp would cost every jti insert a page), and the
# expired rows' keys are spread over the whole key index: at 1,000 tokens a second (~300k rows), 15 ms of CPU and
# a 30 ms stall of the event loop per round for the scan alone. Every 2 s (the broker probe's pace) that was
# ~8 us per request.
JTI_PURGE_EVERY_S = 30.0
# Between two full chunks of a sweep: SQLite's busy handler waits in steps, so a sweep that took the writer lock
# again at once could keep the event loop's writes waiting for a whole sweep.
SWEEP_PAUSE_S = 0.01


class Backend(Protocol):
    name: str
    where: str  # the file, or the DSN without its password
    version: int  # the schema version, after migrating

    @property
    def available(self) -> bool: ...
    def close(self) -> None: ...
    def checkpoint(self) -> None: ...
    def record_sent(self, items: Sequence[NewSent], stage: str, detail: str | None = None) -> None: ...
    def apply_receipts(self, by: str, items: Sequence[ReceiptItem],
                       receipt: Decision) -> list[tuple[str, str]]: ...
    def sent(self, msg_id: str) -> SentMessage | None: ...
    def idempotent(self, platform: str, key: str) -> IdempotentRequest | None: ...
    def remember_idempotent(self, platform: str, key: str, req: IdempotentRequest) -> IdempotentRequest: ...
    def seen(self, ids: Sequence[str]) -> dict[str, Decision]: ...
    def mark_seen(self, decided: Sequence[Decision]) -> None: ...
    def deliver_to_inbox(self, items: Sequence[InboxDelivery]) -> None: ...
    def lease_inbox(self, platform: str, limit: int, lease_s: float = 60.0) -> list[InboxItem]: ...
    def ack_inbox(self, platform: str, ids: Sequence[str]) -> int: ...
    def inbox_depth(self) -> int: ...
    def use_jtis(self, items: Sequence[tuple[str, float]]) -> list[bool]: ...
    def purge_jti(self, before: float) -> None: ...
    def delete_expired(self, sweep: Sweep, before: float, limit: int) -> dict[str, int]: ...
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def open_request(self, req: NewRequest, key: IdempotentRequest | None = None) -> Opened: ...
    def requests(self, correlation_ids: Sequence[str]) -> dict[str, RequestRecord]: ...
    def settled_requests(self, correlation_ids: Sequence[str]) -> set[str]: ...
    def request_by_id(self, message_id: str) -> RequestRecord | None: ...
    def settle_request(self, correlation_id: str, reply: Reply | None, at: float) -> bool: ...
    def answer_requests(self, answers: Sequence[tuple[str, Reply, Decision]], at: float) -> list[bool]: ...
    def late_result(self, correlation_id: str, reply: Reply, at: float) -> bool: ...
    def record_compensation(self, correlation_id: str, compensation_id: str) -> bool: ...
    def overdue_requests(self, pending_before: float, uncompensated_before: float,
                         limit: int) -> list[RequestRecord]: ...
    def park(self, items: Sequence[ParkedMessage]) -> None: ...
    def parked(self, limit: int) -> list[ParkedMessage]: ...
    def parked_conversations(self, correlation_ids: Sequence[str]) -> set[str]: ...
    def lease_parked(self, correlation_id: str, lease_s: float) -> set[str]: ...
    def unpark(self, sources: Sequence[str], correlation_ids: Sequence[str]) -> None: ...
    def parked_count(self) -> int: ...


class StateStore:
    """The gateway's state: what it sent (and the receipts for it), idempotency keys, the dedupe marks of what
    it received, the pull inbox and its leases, used JWT ids, small named values (the audit chain head).

    `StateStore(path)` opens (or creates) a SQLite file; `StateStore(dsn="postgresql://...")` a PostgreSQL
    database. Either way the schema is created or migrated on opening (gateway/state/schema.py). Every method is
    one transaction: all of it or nothing is stored. A database that cannot serve a call (unreachable, slower
    than `timeout_s`, locked, full) raises StateUnavailable, with nothing of that call committed; PostgreSQL then
    reconnects in the background and fails further calls at once until it is back.
    """

    def __init__(self, path: Path | None = None, *, dsn: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, retention: RetentionPolicy | None = None) -> None:
        if (path is None) == (dsn is None):
            raise ValueError("a SQLite path or a PostgreSQL DSN: exactly one")
        if path is not None:
            self._b: Backend = SqliteBackend(path)
        else:
            from gateway.state.postgres import PostgresBackend  # psycopg loads only for those who use it

            self._b = PostgresBackend(str(dsn), timeout_s)
        self._jti_purged_at = -math.inf  # time.monotonic() of the last purge that succeeded
        self.retention = retention or RetentionPolicy()  # what sweep() deletes when
        self.inbox_bell = Doorbell()  # rung by every delivery to the inbox through this store
        log.info("state store open", extra={"backend": self._b.name, "store": self._b.where,
                                            "schema_version": self._b.version})

    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> StateStore:
        """The store `state:` names: `dsn` (or `dsn_file`) for PostgreSQL, else the SQLite `path`."""
        retention = RetentionPolicy.of(cfg)
        if cfg.state_dsn is not None:
            return cls(dsn=cfg.state_dsn, timeout_s=cfg.state_timeout_s, retention=retention)
        return cls(cfg.state_path, retention=retention)

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._b.name

    @property
    def where(self) -> str:
        """The SQLite file, or the PostgreSQL DSN without its password."""
        return self._b.where

    @property
    def schema_version(self) -> int:
        return self._b.version

    @property
    def available(self) -> bool:
        """False while a lost PostgreSQL connection is being rebuilt; reads nothing over the network, so a
        readiness probe may ask it."""
        return self._b.available

    def close(self) -> None:
        self._b.close()

    # --- origin side: what this gateway sent ------------------------------------------------------------

    def record_sent(self, items: Sequence[NewSent], stage: str, detail: str | None = None) -> None:
        """Record a stage of messages sent from here (a history event each). The status only moves forward
        (accepted < publish_failed < published < delivered/rejected): a receipt that overtook 'published' stays."""
        self._b.record_sent(items, stage, detail)

    def apply_receipts(self, by: str, items: Sequence[ReceiptItem], receipt: Decision) -> list[tuple[str, str]]:
        """Apply a peer's receipt items in one transaction and mark the receipt seen. Returns (outcome applied,
        the message's correlation id) per item; the outcome is 'unmatched' where the message is not one this
        gateway sent to `by` with that exact hash."""
        return self._b.apply_receipts(by, items, receipt)

    def sent(self, msg_id: str) -> SentMessage | None:
        """A message sent from here with its history in the order written (receipt details parsed); None if
        unknown."""
        return self._b.sent(msg_id)

    # --- idempotency keys ---------------------------------------------------------------------------------

    def idempotent(self, platform: str, key: str) -> IdempotentRequest | None:
        return self._b.idempotent(platform, key)

    def remember_idempotent(self, platform: str, key: str, req: IdempotentRequest) -> IdempotentRequest:
        """Claim the key for `req` unless it is taken, and return the request that holds it: `req`, or the one
        remembered first (by this or another replica, even one that committed a moment ago). A caller whose
        request lost must answer with the winner's message, never publish its own."""
        return self._b.remember_idempotent(platform, key, req)

    # --- receiving side: dedupe and the pull inbox -------------------------------------------------------

    def seen(self, ids: Sequence[str]) -> dict[str, Decision]:
        """id -> its decision, for the ids already decided. The decision's `source` tells a re-read of the same
        record after a restart from a second copy of the message."""
        return self._b.seen(ids)

    def mark_seen(self, decided: Sequence[Decision]) -> None:
        """Record decisions. A delivered id stays delivered; a rejected one may be decided again (a replayed dead
        letter), the new outcome and source replacing the old."""
        self._b.mark_seen(decided)

    def deliver_to_inbox(self, items: Sequence[InboxDelivery]) -> None:
        """Queued and marked seen (delivered) in one transaction: a message lands in the inbox exactly once."""
        self._b.deliver_to_inbox(items)
        self.inbox_bell.ring()

    def lease_inbox(self, platform: str, limit: int, lease_s: float = 60.0) -> list[InboxItem]:
        """Up to `limit` unacked messages of the platform, oldest first, that nobody holds a lease on; each is
        leased for `lease_s` seconds, during which no other call (in any replica) returns it."""
        return self._b.lease_inbox(platform, limit, lease_s)

    def ack_inbox(self, platform: str, ids: Sequence[str]) -> int:
        """Mark the platform's messages acked (never leased again); returns how many were not acked before."""
        return self._b.ack_inbox(platform, ids)

    def inbox_depth(self) -> int:
        """Unacked messages in the inbox, all platforms."""
        return self._b.inbox_depth()

    # --- single-use JWT ids ------------------------------------------------------------------------------

    def use_jti(self, jti: str, exp: float) -> bool:
        """True the first time a jti is presented (in any replica), False on a replay."""
        return self._b.use_jtis([(jti, exp)])[0]

    def use_jtis(self, items: Sequence[tuple[str, float]]) -> list[bool]:
        """`use_jti` for the tokens of several requests in one transaction (the authenticator's group commit);
        a jti twice in one call is True only the first time."""
        return self._b.use_jtis(items) if items else []

    def purge_jti(self) -> bool:
        """Forget jtis whose token expired over a minute ago (a replay of those is refused by its exp), at most
        every JTI_PURGE_EVERY_S (a call sooner does nothing). Upkeep, so it never raises for an unavailable
        database: False then, and the next call purges."""
        now = time.monotonic()
        if now - self._jti_purged_at < JTI_PURGE_EVERY_S:
            return True
        try:
            self._b.purge_jti(time.time() - JTI_GRACE_S)
        except StateUnavailable as e:
            log.warning("used JWT ids not purged", extra={"error": str(e)})
            return False
        self._jti_purged_at = now
        return True

    # --- retention ----------------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write what the database's log holds into the database itself (SQLite's WAL checkpoint; PostgreSQL does
        its own). Blocking, for a worker thread, so that no commit on the event loop pays for it."""
        self._b.checkpoint()

    def sweep(self, now: float) -> dict[str, int]:
        """Delete the rows past their retention at `now` (epoch seconds; gateway/state/retention.py says which),
        table by table, each chunk of at most SWEEP_CHUNK rows one transaction; returns the rows deleted per
        table. Blocking, for a worker thread: each backend sweeps on a connection of its own. Replicas sweeping
        one database at once delete each row once. StateUnavailable stops it where it is (what was deleted
        stays deleted; the next sweep goes on)."""
        cutoffs = self.retention.cutoffs(now)
        deleted = dict.fromkeys(TABLES, 0)
        for sweep in SWEEPS:
            while True:
                chunk = self._b.delete_expired(sweep, cutoffs[sweep.table], SWEEP_CHUNK)
                for table, n in chunk.items():
                    deleted[table] += n
                if chunk[sweep.table] < SWEEP_CHUNK:
                    break
                time.sleep(SWEEP_PAUSE_S)
        return deleted

    # --- small named values (audit chain head) -----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._b.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._b.put(key, value)

    # --- request-reply: one row per request, keyed by its correlation id -------------------------------------

    def open_request(self, req: NewRequest, key: IdempotentRequest | None = None) -> Opened:
        """Claim the correlation id for a request (status pending, with its message id and compensation) unless
        it is taken, and with it, in the same transaction, the request's Idempotency-Key for `key` (the signed
        message) when given. `Opened.request` is the row that holds the id: this claim's, or the one claimed
        first (by this or another replica); a key held by another message claims nothing (`key_holder`). A
        caller whose claim lost must not publish its message."""
        return self._b.open_request(req, key)

    def requests(self, correlation_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """correlation id -> its request, for those that name one."""
        return self._b.requests(correlation_ids)

    def settled_requests(self, correlation_ids: Sequence[str]) -> set[str]:
        """Of these correlation ids, those whose request is no longer pending (ids only: the watcher's read)."""
        return self._b.settled_requests(correlation_ids)

    def request_by_id(self, message_id: str) -> RequestRecord | None:
        return self._b.request_by_id(message_id)

    def settle_request(self, correlation_id: str, reply: Reply | None, at: float) -> bool:
        """pending -> replied (with `reply`) or, with `reply` None, pending -> timed_out. Decided once: True for
        the one call (in any replica) that moved the request out of pending, False for every other."""
        return self._b.settle_request(correlation_id, reply, at)

    def answer_requests(self, answers: Sequence[tuple[str, Reply, Decision]], at: float) -> list[bool]:
        """For each (correlation id, reply, seen): settle_request(correlation id, reply, at) and, when it wins,
        mark_seen([seen]), all in one transaction: a reply that answered its request is never also taken for a
        fresh message (a crash between the two would let the record, read again, be delivered). Whether each
        one won, in order (a second reply to one request in the same call loses)."""
        return self._b.answer_requests(answers, at) if answers else []

    def late_result(self, correlation_id: str, reply: Reply, at: float) -> bool:
        """timed_out | compensated -> late_result, keeping the result that came after the deadline; True once."""
        return self._b.late_result(correlation_id, reply, at)

    def record_compensation(self, correlation_id: str, compensation_id: str) -> bool:
        """The compensating message's id, set once; timed_out -> compensated (a late_result keeps its status)."""
        return self._b.record_compensation(correlation_id, compensation_id)

    def overdue_requests(self, pending_before: float, uncompensated_before: float, limit: int) -> list[RequestRecord]:
        """Requests still pending with a deadline before `pending_before`, and timed-out ones whose compensation
        was rendered but not recorded as sent, with a deadline before `uncompensated_before`; oldest first."""
        return self._b.overdue_requests(pending_before, uncompensated_before, limit)

    # --- parked messages: waiting for their files (gateway/files/parking.py) ---------------------------------

    def park(self, items: Sequence[ParkedMessage]) -> None:
        """Set records aside, in the order given; a record already parked (known by its source) stays as it is."""
        self._b.park(items)

    def parked(self, limit: int) -> list[ParkedMessage]:
        """Up to `limit` parked messages, in the order parked, of the conversations of which no message is
        leased now."""
        return self._b.parked(limit)

    def parked_conversations(self, correlation_ids: Sequence[str]) -> set[str]:
        """Those of the correlation ids that have a parked message (leased or not)."""
        return self._b.parked_conversations(correlation_ids)

    def lease_parked(self, correlation_id: str, lease_s: float) -> set[str]:
        """Lease every unleased parked message of the conversation for `lease_s`; the sources this call leased
        (none when another call, in any replica, holds them)."""
        return self._b.lease_parked(correlation_id, lease_s)

    def unpark(self, sources: Sequence[str], correlation_ids: Sequence[str]) -> None:
        """Forget the parked messages of `sources` (decided) and release the leases of what is left of these
        conversations, in one transaction."""
        self._b.unpark(sources, correlation_ids)

    def parked_count(self) -> int:
        return self._b.parked_count()
