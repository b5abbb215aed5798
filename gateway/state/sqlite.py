"""The embedded state backend (SQLite, the default): one file, one gateway process.

One connection used from the event loop thread, and one more for the upkeep (the retention sweep and the WAL
checkpoints), which runs in a worker thread (a connection is one transaction at a time: the two must not share
one). Statements are short and WAL with synchronous=NORMAL keeps a commit in the tens of microseconds; each public
method is one transaction, so a crash leaves either the whole step or none of it. A second process on the same
file is not supported (leases are read, then taken): replicas share a PostgreSQL database instead (postgres.py).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from gateway.state import schema
from gateway.state.retention import Sweep
from gateway.state.rows import (
    STATUS_RANK,
    Decision,
    IdempotentRequest,
    InboxDelivery,
    InboxItem,
    NewRequest,
    NewSent,
    Opened,
    ParkedMessage,
    ParkedSql,
    ReceiptItem,
    Reply,
    RequestRecord,
    RequestSql,
    SentMessage,
    StateSchemaError,
    StateUnavailable,
    history_event,
    match_receipts,
    open_params,
    opened_record,
    park_params,
    parked_message,
    reply_params,
    request_record,
    storable,
)

_UPSERT_SENT = f"""
INSERT INTO sent VALUES (?,?,?,?,?,?,?,?,?)
ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated_at=excluded.updated_at
WHERE {STATUS_RANK.format("excluded.status")} > {STATUS_RANK.format("sent.status")}
"""  # noqa: S608 (constants only)

# A delivered id stays delivered; a rejected one may be decided again (a replayed dead letter), and then the
# new outcome and source replace the old.
_MARK_SEEN = """
INSERT INTO seen VALUES (?,?,?,?)
ON CONFLICT(id) DO UPDATE SET outcome=excluded.outcome, source=excluded.source, at=excluded.at
WHERE seen.outcome != 'delivered'
"""

_CHUNK = 500  # host parameters per IN (...) list, well under SQLite's limit

_LEASE = """
UPDATE inbox SET leased_until=?
WHERE seq IN (SELECT seq FROM inbox WHERE platform=? AND acked_at IS NULL AND leased_until<? ORDER BY seq LIMIT ?)
RETURNING seq, id, type, from_region, envelope, signature, late_reply_to
"""

_ACK = "UPDATE inbox SET acked_at=? WHERE platform=? AND acked_at IS NULL AND id IN ({marks})"


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """One write transaction on `db`, its writer lock taken at BEGIN; the block may end it with ROLLBACK itself."""
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        yield cur
        if db.in_transaction:
            cur.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            cur.execute("ROLLBACK")
        raise


def _claim_key(cur: sqlite3.Cursor, platform: str, key: str, req: IdempotentRequest) -> IdempotentRequest:
    """Within a write transaction: the key claimed for `req` unless it is taken, and the request that holds it."""
    cur.execute("INSERT OR IGNORE INTO idempotency VALUES (?,?,?,?,?,?,?)",
                (platform, key, req.request_sha256, req.message_id, req.envelope, req.signature, time.time()))
    row = cur.execute("SELECT request_sha256, message_id, envelope, signature FROM idempotency "
                      "WHERE platform=? AND key=?", (platform, key)).fetchone()
    return IdempotentRequest(row[0], row[1], bytes(row[2]), row[3])


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(method: Callable[P, R]) -> Callable[P, R]:
    """sqlite3.OperationalError (locked past the busy timeout, disk full, I/O error) -> StateUnavailable."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.OperationalError as e:
            raise StateUnavailable(f"SQLite state store: {e}") from e

    return call


# WAL pages (4 KiB) after which a commit checkpoints by itself, ~80 MiB: far beyond what the background
# checkpoints let accumulate; and the size the WAL file is cut back to after a checkpoint.
_WAL_AUTOCHECKPOINT_PAGES = 20_000
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# Every commit writes each page it changed to the WAL whole (and a checkpoint copies it again), and a request's
# rows change a few pages in each of several indexes: 2 KiB pages took the state calls of one round trip from
# ~360 to ~280 us (bench-size tables, measured here). Only a new database takes it (SQLite keeps a file's size).
_PAGE_SIZE = 2048


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        """`timeout_s`: how long a call waits for a lock another connection holds (SQLite's busy timeout)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.where = str(path)
        self._timeout_s = timeout_s
        self._db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        self._sweeper: sqlite3.Connection | None = None  # upkeep (sweeps, checkpoints), opened at first use
        self._sweep_lock = threading.Lock()  # the upkeep connection: one use at a time, and its closing
        self._closed = False
        try:
            self._db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # a new file only: an existing one keeps its own
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint copies the WAL into the database and syncs it: run by a commit that crosses the
            # threshold, it stalls that commit, and the event loop with it (up to ~200 ms measured here). The
            # gateway checkpoints on its upkeep connection in a worker thread instead (`checkpoint`, every
            # CHECKPOINT_INTERVAL_S); the high threshold only bounds the WAL of a store nobody checkpoints.
            self._db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
            self.version = self._migrate()
        except BaseException:
            self._db.close()
            raise

    @property
    def available(self) -> bool:
        return True  # a local file: a full disk or a lock shows in the call that meets it

    def _migrate(self) -> int:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")  # a second opener waits here (busy timeout) until this one commits
        try:
            cur.execute(schema.SQLITE_VERSION_TABLE)
            current = int(cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])
            if current > schema.LATEST:
                raise StateSchemaError(f"{self.path}: state schema version {current} is newer than this gateway's "
                                       f"({schema.LATEST}); it was written by a newer yrdx")
            for step in schema.SQLITE[current:]:
                for statement in step.statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version VALUES (?,?,?)", (step.version, step.description, time.time()))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return max(current, schema.LATEST)

    def close(self) -> None:
        with self._sweep_lock:  # after the chunk being deleted, if any
            self._closed = True
            if self._sweeper is not None:
                self._sweeper.close()
        self._db.close()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        return _immediate(self._db)

    def _tx(self, statements: Iterable[tuple[str, Sequence[Any] | Iterable[Sequence[Any]], bool]]) -> None:
        with self._transaction() as cur:
            for sql, params, many in statements:
                if many:
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)  # type: ignore[arg-type]

    def _in(self, sql: str, keys: Sequence[str]) -> list[Any]:
        """Rows of `sql` (whose one IN list is written `{marks}`) for the keys, in chunks."""
        rows: list[Any] = []
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            rows.extend(self._db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk))
        return rows

    # --- origin side: what this gateway sent ------------------------------------------------------------

    @_guarded
    def record_sent(self, items: Sequence[NewSent], stage: str, detail: str | None = None) -> None:
        now = time.time()
        self._tx([
            (
                _UPSERT_SENT,
                [(m.id, m.platform, m.type, m.to_region, m.correlation_id, m.envelope_sha256, stage, now, now)
                 for m in items],
                True,
            ),
            ("INSERT INTO sent_events VALUES (?,?,?,?)", [(m.id, now, stage, detail) for m in items], True),
        ])

    @_guarded
    def apply_receipts(self, by: str, items: Sequence[ReceiptItem], receipt: Decision) -> list[tuple[str, str]]:
        now = time.time()
        ids = [i.message_id for i in items if storable(i.message_id)]
        sql = "SELECT id, envelope_sha256, to_region, correlation_id FROM sent WHERE id IN ({marks})"
        known = {r[0]: (r[1], r[2], r[3]) for r in self._in(sql, ids)}
        applied, updates, events = match_receipts(by, items, known, now)
        self._tx([
            ("UPDATE sent SET status=?, updated_at=? WHERE id=?", updates, True),
            ("INSERT INTO sent_events VALUES (?,?,?,?)", events, True),
            ("INSERT OR IGNORE INTO seen VALUES (?,?,?,?)", (receipt.id, receipt.outcome, receipt.source, now), False),
        ])
        return applied

    @_guarded
    def sent(self, msg_id: str) -> SentMessage | None:
        if not storable(msg_id):
            return None
        row = self._db.execute(
            "SELECT id, platform, type, to_region, correlation_id, envelope_sha256, status FROM sent WHERE id=?",
            (msg_id,),
        ).fetchone()
        if row is None:
            return None
        events = self._db.execute(
            "SELECT at, stage, detail FROM sent_events WHERE id=? ORDER BY rowid", (msg_id,)
        ).fetchall()
        history = [history_event(at, stage, detail) for at, stage, detail in events]
        msg_id_, platform, msg_type, to_region, correlation_id, sha, status = row
        return SentMessage(msg_id_, platform, msg_type, to_region, correlation_id, sha, status, history)

    # --- idempotency keys ---------------------------------------------------------------------------------

    @_guarded
    def idempotent(self, platform: str, key: str) -> IdempotentRequest | None:
        if not (storable(platform) and storable(key)):
            return None
        row = self._db.execute(
            "SELECT request_sha256, message_id, envelope, signature FROM idempotency WHERE platform=? AND key=?",
            (platform, key),
        ).fetchone()
        return IdempotentRequest(row[0], row[1], bytes(row[2]), row[3]) if row else None

    @_guarded
    def remember_idempotent(self, platform: str, key: str, req: IdempotentRequest) -> IdempotentRequest:
        with self._transaction() as cur:  # claim and read back together: the sweep cannot delete in between
            return _claim_key(cur, platform, key, req)

    # --- receiving side: dedupe and the pull inbox -------------------------------------------------------

    @_guarded
    def seen(self, ids: Sequence[str]) -> dict[str, Decision]:
        sql = "SELECT id, outcome, source FROM seen WHERE id IN ({marks})"
        return {r[0]: Decision(r[0], r[1], r[2]) for r in self._in(sql, [i for i in ids if storable(i)])}

    @_guarded
    def mark_seen(self, decided: Sequence[Decision]) -> None:
        now = time.time()
        self._tx([(_MARK_SEEN, [(d.id, d.outcome, d.source, now) for d in decided], True)])

    @_guarded
    def deliver_to_inbox(self, items: Sequence[InboxDelivery]) -> None:
        now = time.time()
        self._tx([
            ("INSERT OR IGNORE INTO inbox (platform, id, type, from_region, envelope, signature, received_at, "
             "late_reply_to) VALUES (?,?,?,?,?,?,?,?)",
             [(i.platform, i.id, i.type, i.from_region, i.envelope, i.signature, now, i.late_reply_to)
              for i in items], True),
            (_MARK_SEEN, [(i.id, "delivered", i.source, now) for i in items], True),
        ])

    @_guarded
    def lease_inbox(self, platform: str, limit: int, lease_s: float = 60.0) -> list[InboxItem]:
        now = time.time()
        # One autocommitted statement (a transaction of its own) picks and leases: no SELECT then UPDATE.
        rows = self._db.execute(_LEASE, (now + lease_s, platform, now, limit)).fetchall()
        rows.sort(key=lambda r: r[0])  # RETURNING promises no order
        return [InboxItem(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    @_guarded
    def ack_inbox(self, platform: str, ids: Sequence[str]) -> int:
        now = time.time()
        keys = list(dict.fromkeys(i for i in ids if storable(i)))
        if not keys:
            return 0
        with self._transaction() as cur:
            return sum(max(cur.execute(_ACK.format(marks=",".join("?" * len(c))), (now, platform, *c)).rowcount, 0)
                       for c in (keys[i:i + _CHUNK] for i in range(0, len(keys), _CHUNK)))

    @_guarded
    def inbox_depth(self) -> int:
        row = self._db.execute("SELECT count(*) FROM inbox WHERE acked_at IS NULL").fetchone()
        return int(row[0])

    # --- single-use JWT ids ------------------------------------------------------------------------------

    @_guarded
    def use_jtis(self, items: Sequence[tuple[str, float]]) -> list[bool]:
        if len(items) == 1:  # alone: one autocommitted statement is already one transaction
            return [self._db.execute("INSERT OR IGNORE INTO jti VALUES (?,?)", items[0]).rowcount == 1]
        with self._transaction() as cur:  # the group in one transaction: one WAL commit
            return [cur.execute("INSERT OR IGNORE INTO jti VALUES (?,?)", item).rowcount == 1 for item in items]

    @_guarded
    def purge_jti(self, before: float) -> None:
        self._db.execute("DELETE FROM jti WHERE exp < ?", (before,))

    # --- retention ----------------------------------------------------------------------------------------

    @_guarded
    def delete_expired(self, sweep: Sweep, before: float, limit: int) -> dict[str, int]:
        with self._sweep_lock:
            if self._closed:
                raise StateUnavailable(f"the state store {self.path} is closed")
            db = self._upkeep()
            # DELETE ... LIMIT needs a compile-time option; the rowids of one chunk do the same.
            sql = (f"DELETE FROM {sweep.table} WHERE rowid IN "  # noqa: S608 (constants only)
                   f"(SELECT rowid FROM {sweep.table} WHERE {sweep.where} LIMIT ?)")
            if sweep.history is None:
                return {sweep.table: db.execute(sql, (before, limit)).rowcount}  # autocommit: one transaction
            with _immediate(db) as cur:
                ids = [(r[0],) for r in cur.execute(sql + " RETURNING id", (before, limit)).fetchall()]
                cur.executemany(f"DELETE FROM {sweep.history} WHERE id = ?", ids)  # noqa: S608
                return {sweep.table: len(ids), sweep.history: max(cur.rowcount, 0)}

    @_guarded
    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database (PASSIVE: never waits for or blocks a writer), on the
        upkeep connection; blocking, for a worker thread."""
        with self._sweep_lock:
            if self._closed:
                return
            self._upkeep().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _upkeep(self) -> sqlite3.Connection:
        """The connection of the sweep and the checkpoints, opened at first use (hold `_sweep_lock`)."""
        if self._sweeper is None:
            self._sweeper = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None,
                                            check_same_thread=False)  # each use may run in another thread
        return self._sweeper

    # --- small named values (audit chain head) -----------------------------------------------------------

    @_guarded
    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT v FROM kv WHERE k=?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    @_guarded
    def put(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT INTO kv VALUES (?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (key, value))

    # --- request-reply ----------------------------------------------------------------------------------------

    def _changed(self, sql: str, params: Sequence[Any]) -> bool:
        """One conditional statement in its own transaction: whether it changed a row."""
        cur = self._db.execute(sql, params)  # autocommit: one statement is one transaction
        return cur.rowcount == 1

    @_guarded
    def open_request(self, req: NewRequest, key: IdempotentRequest | None = None) -> Opened:
        params = open_params(req)
        with self._transaction() as cur:  # claim and read back together: the sweep cannot delete in between
            if key is not None:
                holder = _claim_key(cur, req.platform, req.idempotency_key or "", key)
                if holder.message_id != key.message_id:
                    cur.execute("ROLLBACK")  # (nothing written)
                    return Opened(None, False, holder)
            if cur.execute(RequestSql.OPEN, params).rowcount == 1:  # claimed: the row is what was inserted
                return Opened(opened_record(params), True)
            row = cur.execute(RequestSql.BY_CORRELATION, (req.correlation_id,)).fetchone()
            cur.execute("ROLLBACK")  # the key's claim too: the request that holds the id answers
        return Opened(request_record(row), False)

    @_guarded
    def requests(self, correlation_ids: Sequence[str]) -> dict[str, RequestRecord]:
        sql = RequestSql.BY_CORRELATION.replace("= ?", "IN ({marks})")
        rows = self._in(sql, [c for c in correlation_ids if storable(c)])
        return {r[0]: request_record(r) for r in rows}

    @_guarded
    def settled_requests(self, correlation_ids: Sequence[str]) -> set[str]:
        return {r[0] for r in self._in(RequestSql.SETTLED, [c for c in correlation_ids if storable(c)])}

    @_guarded
    def request_by_id(self, message_id: str) -> RequestRecord | None:
        if not storable(message_id):
            return None
        row = self._db.execute(RequestSql.BY_ID, (message_id,)).fetchone()
        return request_record(row) if row else None

    @_guarded
    def settle_request(self, correlation_id: str, reply: Reply | None, at: float) -> bool:
        if reply is None:
            return self._changed(RequestSql.TIMED_OUT, (correlation_id,))
        return self._changed(RequestSql.REPLIED, reply_params(at, reply, correlation_id))

    @_guarded
    def answer_requests(self, answers: Sequence[tuple[str, Reply, Decision]], at: float) -> list[bool]:
        won: list[bool] = []
        with self._transaction() as cur:
            for correlation_id, reply, seen in answers:
                won.append(cur.execute(RequestSql.REPLIED, reply_params(at, reply, correlation_id)).rowcount == 1)
                if won[-1]:
                    cur.execute(_MARK_SEEN, (seen.id, seen.outcome, seen.source, at))
        return won

    @_guarded
    def late_result(self, correlation_id: str, reply: Reply, at: float) -> bool:
        return self._changed(RequestSql.LATE, reply_params(at, reply, correlation_id))

    @_guarded
    def record_compensation(self, correlation_id: str, compensation_id: str) -> bool:
        return self._changed(RequestSql.COMPENSATED, (compensation_id, correlation_id))

    @_guarded
    def overdue_requests(self, pending_before: float, uncompensated_before: float, limit: int) -> list[RequestRecord]:
        rows = self._db.execute(RequestSql.OVERDUE, (pending_before, uncompensated_before, limit)).fetchall()
        return [request_record(r) for r in rows]

    # --- parked messages (waiting for their files) ----------------------------------------------------------

    @_guarded
    def park(self, items: Sequence[ParkedMessage]) -> None:
        now = time.time()
        self._tx([(ParkedSql.PARK, [park_params(m, now) for m in items], True)])

    @_guarded
    def parked(self, limit: int) -> list[ParkedMessage]:
        return [parked_message(r) for r in self._db.execute(ParkedSql.FREE, (time.time(), limit))]

    @_guarded
    def parked_conversations(self, correlation_ids: Sequence[str]) -> set[str]:
        sql = "SELECT DISTINCT correlation_id FROM parked WHERE correlation_id IN ({marks})"
        return {r[0] for r in self._in(sql, sorted({c for c in correlation_ids if storable(c)}))}

    @_guarded
    def lease_parked(self, correlation_id: str, lease_s: float) -> set[str]:
        now = time.time()
        with self._transaction() as cur:  # one process per file: read, then take, in one transaction
            rows = cur.execute("SELECT source FROM parked WHERE correlation_id = ? AND leased_until < ?",
                               (correlation_id, now)).fetchall()
            cur.execute(ParkedSql.LEASE, (now + lease_s, correlation_id, now))
        return {r[0] for r in rows}

    @_guarded
    def unpark(self, sources: Sequence[str], correlation_ids: Sequence[str]) -> None:
        self._tx([(ParkedSql.DROP, [(s,) for s in sources], True),
                  (ParkedSql.RELEASE, [(c,) for c in correlation_ids], True)])

    @_guarded
    def parked_count(self) -> int:
        return int(self._db.execute(ParkedSql.COUNT).fetchone()[0])
