"""The shared state backend (PostgreSQL through psycopg 3): every replica of a region on one database.

The guarantees are the SQLite backend's, now across processes: each public method is one transaction (the inbox
row and its dedupe mark commit together); a lease is one UPDATE over rows picked with FOR UPDATE SKIP LOCKED, so
a row another replica is leasing is skipped, never waited for or handed out twice, and lease times come from the
database's clock (the one clock all replicas share); idempotency keys and JWT ids are claimed with INSERT ... ON
CONFLICT DO NOTHING, the loser reading back the winner's row. Rows are written in key order, so two replicas
writing overlapping batches queue behind each other instead of deadlocking (a deadlock or serialization failure
the server reports anyway is retried, twice at most).

The methods are synchronous and called from the event loop, so no call may hang it: every call has a deadline
(`timeout_s`) enforced on the client (psycopg's wait) and on the server (statement_timeout, lock_timeout), plus
connect_timeout and TCP keepalives for a peer that vanished. A call that meets a lost database raises
StateUnavailable; the connection is then rebuilt by a background thread, and until it is back every call fails
at once (no call waits for a reconnect on the loop).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.rows import TupleRow

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

log = logging.getLogger(__name__)

T = TypeVar("T")
RV = TypeVar("RV")

MIGRATION_TIMEOUT_S = 120.0  # a start-up migration (or waiting for another replica's) may take this long
RECONNECT_EVERY_S = 1.0
# The client's own deadline comes this long after the server's timeouts, so that a server that is alive says why
# it gave up (and keeps the session); it only fires when the server, or the path to it, does not answer at all.
CLIENT_MARGIN_S = 1.0
_RETRIED = ("40001", "40P01")  # serialization failure, deadlock: the transaction was rolled back, run it again
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('yrdx.state.schema'))"
_NOW = "extract(epoch FROM now())::float8"

_UPSERT_SENT = f"""
INSERT INTO sent AS s VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)
ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
WHERE {STATUS_RANK.format("excluded.status")} > {STATUS_RANK.format("s.status")}
"""  # noqa: S608 (constants only)

_MARK_SEEN = """
INSERT INTO seen AS s VALUES (%s,%s,%s,%s)
ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, source = excluded.source, at = excluded.at
WHERE s.outcome <> 'delivered'
"""

_LEASE = f"""
UPDATE inbox SET leased_until = {_NOW} + %s
WHERE seq IN (
    SELECT seq FROM inbox
    WHERE platform = %s AND acked_at IS NULL AND leased_until < {_NOW}
    ORDER BY seq LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING seq, id, type, from_region, envelope, signature, late_reply_to
"""  # noqa: S608 (constants only)


def _pg(sql: str) -> str:
    """A statement of rows.RequestSql with psycopg's placeholders."""
    return sql.replace("?", "%s")


class _Connection(psycopg.Connection[TupleRow]):
    """A connection whose every wait for the server ends by `deadline` (time.monotonic()), when one is set:
    psycopg's own waits have no limit, and the server's statement_timeout cannot help when the server (or the
    path to it) is what hangs."""

    deadline: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is None and self.deadline is not None:
            timeout = max(self.deadline - time.monotonic(), 0.001)
        return super().wait(gen, interval, timeout)


def _claim_key(conn: _Connection, platform: str, key: str, req: IdempotentRequest) -> IdempotentRequest | None:
    """The key claimed for `req` unless it is taken, and the request that holds it; None when the holder was swept
    between the two statements (the key is free again). Two statements, not one: the read must see a winner that
    committed while the INSERT waited for it (one statement reads with one snapshot, taken before)."""
    row = conn.execute(
        "INSERT INTO idempotency VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (platform, key) DO NOTHING "
        "RETURNING request_sha256, message_id, envelope, signature",
        (platform, key, req.request_sha256, req.message_id, req.envelope, req.signature, time.time()),
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT request_sha256, message_id, envelope, signature FROM idempotency "
                           "WHERE platform = %s AND key = %s", (platform, key)).fetchone()
    return None if row is None else IdempotentRequest(row[0], row[1], bytes(row[2]), row[3])


def summary(e: BaseException) -> str:
    """The first line of a driver error (libpq never prints a password; the DSN is not in it)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def masked(dsn: str) -> str:
    """Where a DSN points, without its password: postgresql://user@host:port/dbname."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql://<unparsable DSN>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PostgresBackend:
    name = "postgresql"

    def __init__(self, dsn: str, timeout_s: float = 2.0) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError("timeout_s must be a positive number of seconds")
        self._dsn = dsn
        self.where = masked(dsn)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # one call at a time on the connection; guards its replacement too
        self._closed = threading.Event()
        self._reconnecting: threading.Thread | None = None
        self._error = ""
        # The retention sweep's own connection (opened by the first sweep): it runs in a worker thread, and on the
        # shared one it would hold self._lock, and so the event loop, for each chunk it deletes.
        self._sweeper: _Connection | None = None
        self._sweep_lock = threading.Lock()
        try:
            self._conn: _Connection | None = self._connect()
        except psycopg.Error as e:
            raise StateUnavailable(f"cannot connect to the state database {self.where}: {summary(e)}") from e
        try:
            self.version = self._migrate(self._conn)
        except psycopg.Error as e:
            self._conn.close()
            raise StateUnavailable(f"cannot migrate the state database {self.where}: {summary(e)}") from e
        except BaseException:
            self._conn.close()
            raise

    # --- the connection ----------------------------------------------------------------------------------

    def _connect(self) -> _Connection:
        ms = str(int(self._timeout_s * 1000))
        conn = _Connection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(2, math.ceil(self._timeout_s)),  # libpq's least
            keepalives=1,
            keepalives_idle=max(1, math.ceil(self._timeout_s)),
            keepalives_interval=1,
            keepalives_count=3,
            tcp_user_timeout=int(ms),  # unacknowledged data (and failed keepalives) end the connection
            fallback_application_name="yrdx-gateway",
        )
        try:
            conn.deadline = time.monotonic() + self._timeout_s + CLIENT_MARGIN_S
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                (ms, ms, str(max(5000, 2 * int(ms)))),
            )
            conn.deadline = None
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: _Connection) -> int:
        """Apply the missing steps of schema.POSTGRES, one replica at a time (an advisory lock held until the
        transaction ends): a replica that starts while another migrates waits, then finds the work done."""
        limit = f"{int(MIGRATION_TIMEOUT_S * 1000)}ms"
        conn.deadline = time.monotonic() + MIGRATION_TIMEOUT_S + 5
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                             (limit, limit))
                conn.execute(_SCHEMA_LOCK)
                conn.execute(schema.POSTGRES_VERSION_TABLE)
                row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
                current = int(row[0]) if row else 0
                if current > schema.LATEST:
                    raise StateSchemaError(
                        f"{self.where}: state schema version {current} is newer than this gateway's "
                        f"({schema.LATEST}); it was written by a newer yrdx")
                for step in schema.POSTGRES[current:]:
                    for statement in step.statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                                 (step.version, step.description))
                    log.info("state schema migrated", extra={"version": step.version, "store": self.where})
        finally:
            conn.deadline = None
        return max(current, schema.LATEST)

    @property
    def available(self) -> bool:
        """False while the connection is lost and being rebuilt (reads no network)."""
        return self._conn is not None and not self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        with self._sweep_lock:  # after the chunk being deleted, if any
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.close()

    def _lost(self, why: str) -> None:
        """Drop the connection (under self._lock) and rebuild it in the background."""
        conn, self._conn = self._conn, None
        self._error = why
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 (it is gone either way)
                pass
        if (self._reconnecting is None or not self._reconnecting.is_alive()) and not self._closed.is_set():
            log.warning("state database lost; reconnecting in the background",
                        extra={"store": self.where, "error": why})
            self._reconnecting = threading.Thread(target=self._reconnect, name="yrdx-state-reconnect", daemon=True)
            self._reconnecting.start()

    def _reconnect(self) -> None:
        while not self._closed.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as e:
                self._error = summary(e)
                self._closed.wait(RECONNECT_EVERY_S)
                continue
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    return
                self._conn = conn
            log.info("state database reachable again", extra={"store": self.where})
            return

    def _run(self, call: Callable[[_Connection], T]) -> T:
        """`call` on the connection within the deadline; a lost or too slow database -> StateUnavailable."""
        with self._lock:
            conn = self._conn
            if conn is None:
                if self._closed.is_set():
                    raise StateUnavailable(f"the state store {self.where} is closed")
                raise StateUnavailable(f"the state database {self.where} is unreachable: {self._error} "
                                       "(reconnecting)")
            conn.deadline = time.monotonic() + self._timeout_s + CLIENT_MARGIN_S
            try:
                attempt = 0
                while True:
                    try:
                        return call(conn)
                    except psycopg.OperationalError as e:
                        idle = conn.info.transaction_status == pq.TransactionStatus.IDLE
                        if e.sqlstate not in _RETRIED or attempt == 2 or not idle:
                            raise
                        attempt += 1
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                why = summary(e)
                if conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
                    self._lost(why)  # broken, or a query whose answer never came: the session is unusable
                raise StateUnavailable(f"the state database {self.where} did not answer: {why}") from e
            finally:
                conn.deadline = None

    # --- origin side: what this gateway sent ------------------------------------------------------------

    def record_sent(self, items: Sequence[NewSent], stage: str, detail: str | None = None) -> None:
        if not items:
            return
        now = time.time()
        rows = sorted(items, key=lambda m: m.id)

        def call(conn: _Connection) -> None:
            with conn.transaction():
                cur = conn.cursor()
                cur.executemany(_UPSERT_SENT, [(m.id, m.platform, m.type, m.to_region, m.correlation_id,
                                                m.envelope_sha256, stage, now, now) for m in rows])
                cur.executemany("INSERT INTO sent_events (id, at, stage, detail) VALUES (%s,%s,%s,%s)",
                                [(m.id, now, stage, detail) for m in items])

        self._run(call)

    def apply_receipts(self, by: str, items: Sequence[ReceiptItem], receipt: Decision) -> list[tuple[str, str]]:
        ids = sorted({i.message_id for i in items if storable(i.message_id)})

        def call(conn: _Connection) -> list[tuple[str, str]]:
            now = time.time()
            with conn.transaction():
                rows = conn.execute(
                    "SELECT id, envelope_sha256, to_region, correlation_id FROM sent WHERE id = ANY(%s)", (ids,))
                known = {r[0]: (r[1], r[2], r[3]) for r in rows}
                applied, updates, events = match_receipts(by, items, known, now)
                cur = conn.cursor()
                if updates:
                    updates.sort(key=lambda u: u[2])
                    cur.executemany("UPDATE sent SET status = %s, updated_at = %s WHERE id = %s", updates)
                    cur.executemany("INSERT INTO sent_events (id, at, stage, detail) VALUES (%s,%s,%s,%s)", events)
                conn.execute("INSERT INTO seen VALUES (%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING",
                             (receipt.id, receipt.outcome, receipt.source, now))
            return applied

        return self._run(call)

    def sent(self, msg_id: str) -> SentMessage | None:
        if not storable(msg_id):
            return None

        def call(conn: _Connection) -> SentMessage | None:
            row = conn.execute(
                "SELECT id, platform, type, to_region, correlation_id, envelope_sha256, status FROM sent WHERE id = %s",
                (msg_id,),
            ).fetchone()
            if row is None:
                return None
            events = conn.execute("SELECT at, stage, detail FROM sent_events WHERE id = %s ORDER BY n",
                                  (msg_id,)).fetchall()
            history = [history_event(at, stage, detail) for at, stage, detail in events]
            return SentMessage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], history)

        return self._run(call)

    # --- idempotency keys ---------------------------------------------------------------------------------

    def idempotent(self, platform: str, key: str) -> IdempotentRequest | None:
        if not (storable(platform) and storable(key)):
            return None

        def call(conn: _Connection) -> IdempotentRequest | None:
            row = conn.execute(
                "SELECT request_sha256, message_id, envelope, signature FROM idempotency WHERE platform = %s "
                "AND key = %s", (platform, key)).fetchone()
            return IdempotentRequest(row[0], row[1], bytes(row[2]), row[3]) if row else None

        return self._run(call)

    def remember_idempotent(self, platform: str, key: str, req: IdempotentRequest) -> IdempotentRequest:
        def call(conn: _Connection) -> IdempotentRequest:
            # None: the holder was swept between the two statements; the key is free again
            holder = _claim_key(conn, platform, key, req) or _claim_key(conn, platform, key, req)
            assert holder is not None  # a holder that fresh is not swept
            return holder

        return self._run(call)

    # --- receiving side: dedupe and the pull inbox -------------------------------------------------------

    def seen(self, ids: Sequence[str]) -> dict[str, Decision]:
        keys = [i for i in ids if storable(i)]
        if not keys:
            return {}

        def call(conn: _Connection) -> dict[str, Decision]:
            rows = conn.execute("SELECT id, outcome, source FROM seen WHERE id = ANY(%s)", (keys,))
            return {r[0]: Decision(r[0], r[1], r[2]) for r in rows}

        return self._run(call)

    def mark_seen(self, decided: Sequence[Decision]) -> None:
        if not decided:
            return
        now = time.time()
        rows = [(d.id, d.outcome, d.source, now) for d in decided]
        rows.sort(key=lambda r: r[0])  # stable: a later decision of the same id in the batch still wins

        def call(conn: _Connection) -> None:
            with conn.transaction():
                conn.cursor().executemany(_MARK_SEEN, rows)

        self._run(call)

    def deliver_to_inbox(self, items: Sequence[InboxDelivery]) -> None:
        if not items:
            return
        now = time.time()
        rows = sorted(items, key=lambda i: i.id)

        def call(conn: _Connection) -> None:
            with conn.transaction():
                cur = conn.cursor()
                cur.executemany(
                    "INSERT INTO inbox (platform, id, type, from_region, envelope, signature, received_at, "
                    "late_reply_to) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING",
                    [(i.platform, i.id, i.type, i.from_region, i.envelope, i.signature, now, i.late_reply_to)
                     for i in rows])
                cur.executemany(_MARK_SEEN, [(i.id, "delivered", i.source, now) for i in rows])

        self._run(call)

    def lease_inbox(self, platform: str, limit: int, lease_s: float = 60.0) -> list[InboxItem]:
        def call(conn: _Connection) -> list[InboxItem]:
            rows = conn.execute(_LEASE, (lease_s, platform, limit)).fetchall()
            return sorted((InboxItem(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows),
                          key=lambda i: i.seq)

        return self._run(call)

    def ack_inbox(self, platform: str, ids: Sequence[str]) -> int:
        keys = sorted({i for i in ids if storable(i)})
        if not keys:
            return 0

        def call(conn: _Connection) -> int:
            cur = conn.execute("UPDATE inbox SET acked_at = %s WHERE platform = %s AND id = ANY(%s) "
                               "AND acked_at IS NULL", (time.time(), platform, keys))
            return max(cur.rowcount, 0)

        return self._run(call)

    def inbox_depth(self) -> int:
        def call(conn: _Connection) -> int:
            row = conn.execute("SELECT count(*) FROM inbox WHERE acked_at IS NULL").fetchone()
            return int(row[0]) if row else 0

        return self._run(call)

    # --- single-use JWT ids ------------------------------------------------------------------------------

    def use_jtis(self, items: Sequence[tuple[str, float]]) -> list[bool]:
        def call(conn: _Connection) -> list[bool]:
            # One statement, one commit; RETURNING names the rows this call inserted (a replay, or a jti that
            # another replica inserted first, is not among them).
            rows = conn.execute(
                "INSERT INTO jti SELECT * FROM unnest(%s::text[], %s::double precision[]) "
                "ON CONFLICT (jti) DO NOTHING RETURNING jti",
                ([j for j, _ in items], [e for _, e in items]),
            ).fetchall()
            fresh = {r[0] for r in rows}
            used: list[bool] = []
            for jti, _ in items:  # a jti twice in one group: only the first is fresh
                used.append(jti in fresh)
                fresh.discard(jti)
            return used

        return self._run(call)

    def purge_jti(self, before: float) -> None:
        self._run(lambda conn: conn.execute("DELETE FROM jti WHERE exp < %s", (before,)))

    # --- retention ----------------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own, off the gateway's connections."""

    def delete_expired(self, sweep: Sweep, before: float, limit: int) -> dict[str, int]:
        # A chunk by the rows' physical ids: ANY(ARRAY(...)) is read once, then a TID scan. A row updated meanwhile
        # (a dedupe mark decided again) has a new ctid and stays; a row another replica's sweep deletes first is
        # waited for, then skipped: two sweeps at once delete each row once.
        where = _pg(sweep.where)
        sql = (f"DELETE FROM {sweep.table} WHERE ctid = ANY(ARRAY("  # noqa: S608 (constants only)
               f"SELECT ctid FROM {sweep.table} WHERE {where} LIMIT %s))")
        with self._sweep_lock:
            if self._closed.is_set():
                raise StateUnavailable(f"the state store {self.where} is closed")
            try:
                conn = self._sweeper = self._sweeper or self._connect()
                conn.deadline = time.monotonic() + self._timeout_s + CLIENT_MARGIN_S
                with conn.transaction():
                    if sweep.history is None:
                        return {sweep.table: max(conn.execute(sql, (before, limit)).rowcount, 0)}
                    ids = [r[0] for r in conn.execute(sql + " RETURNING id", (before, limit)).fetchall()]
                    events = conn.execute(f"DELETE FROM {sweep.history} WHERE id = ANY(%s)", (ids,))  # noqa: S608
                    return {sweep.table: len(ids), sweep.history: max(events.rowcount, 0)}
            except psycopg.Error as e:  # the next sweep starts on a new connection
                sweeper, self._sweeper = self._sweeper, None
                if sweeper is not None:
                    sweeper.close()
                raise StateUnavailable(f"the state database {self.where} did not sweep: {summary(e)}") from e
            finally:
                if self._sweeper is not None:
                    self._sweeper.deadline = None

    # --- small named values (audit chain head) -----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        def call(conn: _Connection) -> bytes | None:
            row = conn.execute("SELECT v FROM kv WHERE k = %s", (key,)).fetchone()
            return bytes(row[0]) if row else None

        return self._run(call)

    def put(self, key: str, value: bytes) -> None:
        self._run(lambda conn: conn.execute(
            "INSERT INTO kv VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (key, value)))

    # --- request-reply ----------------------------------------------------------------------------------------

    def _changed(self, sql: str, params: Sequence[object]) -> bool:
        """One conditional statement (autocommit: its own transaction): whether it changed a row."""
        return self._run(lambda conn: conn.execute(_pg(sql), params).rowcount == 1)

    def open_request(self, req: NewRequest, key: IdempotentRequest | None = None) -> Opened:
        params = open_params(req)

        def claim(conn: _Connection) -> Opened | None:
            """None: a holder was swept between a claim's INSERT and its read; try again."""
            opened: Opened | None = None
            with conn.transaction():
                if key is not None:
                    holder = _claim_key(conn, req.platform, req.idempotency_key or "", key)
                    if holder is None or holder.message_id != key.message_id:
                        opened = None if holder is None else Opened(None, False, holder)
                        raise psycopg.Rollback  # (nothing written)
                if conn.execute(_pg(RequestSql.OPEN), params).rowcount == 1:  # claimed: the row is what was inserted
                    return Opened(opened_record(params), True)
                # Lost the claim: a second statement, so that the read sees the row another replica committed
                # while the INSERT waited for it.
                row = conn.execute(_pg(RequestSql.BY_CORRELATION), (req.correlation_id,)).fetchone()
                opened = None if row is None else Opened(request_record(row), False)
                raise psycopg.Rollback  # the key's claim too: the request that holds the id answers
            return opened

        def call(conn: _Connection) -> Opened:
            opened = claim(conn) or claim(conn)
            assert opened is not None  # a holder that fresh is not swept
            return opened

        return self._run(call)

    def requests(self, correlation_ids: Sequence[str]) -> dict[str, RequestRecord]:
        keys = [c for c in correlation_ids if storable(c)]
        if not keys:
            return {}
        sql = _pg(RequestSql.BY_CORRELATION.replace("= ?", "= ANY(?)"))
        return self._run(lambda conn: {r[0]: request_record(r) for r in conn.execute(sql, (keys,))})

    def settled_requests(self, correlation_ids: Sequence[str]) -> set[str]:
        keys = [c for c in correlation_ids if storable(c)]
        if not keys:
            return set()
        sql = _pg(RequestSql.SETTLED.replace("IN ({marks})", "= ANY(?)"))
        return self._run(lambda conn: {r[0] for r in conn.execute(sql, (keys,))})

    def request_by_id(self, message_id: str) -> RequestRecord | None:
        if not storable(message_id):
            return None

        def call(conn: _Connection) -> RequestRecord | None:
            row = conn.execute(_pg(RequestSql.BY_ID), (message_id,)).fetchone()
            return request_record(row) if row else None

        return self._run(call)

    def settle_request(self, correlation_id: str, reply: Reply | None, at: float) -> bool:
        if reply is None:
            return self._changed(RequestSql.TIMED_OUT, (correlation_id,))
        return self._changed(RequestSql.REPLIED, reply_params(at, reply, correlation_id))

    def answer_requests(self, answers: Sequence[tuple[str, Reply, Decision]], at: float) -> list[bool]:
        def call(conn: _Connection) -> list[bool]:
            won: list[bool] = []
            with conn.transaction():
                for correlation_id, reply, seen in answers:
                    params = reply_params(at, reply, correlation_id)
                    won.append(conn.execute(_pg(RequestSql.REPLIED), params).rowcount == 1)
                    if won[-1]:
                        conn.execute(_MARK_SEEN, (seen.id, seen.outcome, seen.source, at))
            return won

        return self._run(call)

    def late_result(self, correlation_id: str, reply: Reply, at: float) -> bool:
        return self._changed(RequestSql.LATE, reply_params(at, reply, correlation_id))

    def record_compensation(self, correlation_id: str, compensation_id: str) -> bool:
        return self._changed(RequestSql.COMPENSATED, (compensation_id, correlation_id))

    def overdue_requests(self, pending_before: float, uncompensated_before: float, limit: int) -> list[RequestRecord]:
        def call(conn: _Connection) -> list[RequestRecord]:
            rows = conn.execute(_pg(RequestSql.OVERDUE), (pending_before, uncompensated_before, limit)).fetchall()
            return [request_record(r) for r in rows]

        return self._run(call)

    # --- parked messages (waiting for their files) ----------------------------------------------------------

    def park(self, items: Sequence[ParkedMessage]) -> None:
        if not items:
            return
        now = time.time()

        def call(conn: _Connection) -> None:
            with conn.transaction():
                conn.cursor().executemany(_pg(ParkedSql.PARK), [park_params(m, now) for m in items])

        self._run(call)

    def parked(self, limit: int) -> list[ParkedMessage]:
        return self._run(lambda conn: [parked_message(r) for r in conn.execute(_pg(ParkedSql.FREE),
                                                                                (time.time(), limit))])

    def parked_conversations(self, correlation_ids: Sequence[str]) -> set[str]:
        keys = sorted({c for c in correlation_ids if storable(c)})
        if not keys:
            return set()
        sql = "SELECT DISTINCT correlation_id FROM parked WHERE correlation_id = ANY(%s)"
        return self._run(lambda conn: {r[0] for r in conn.execute(sql, (keys,))})

    def lease_parked(self, correlation_id: str, lease_s: float) -> set[str]:
        # One UPDATE: a replica racing for the same conversation waits on the row locks, then finds them leased.
        now = time.time()
        sql = _pg(ParkedSql.LEASE) + " RETURNING source"
        return self._run(lambda conn: {r[0] for r in conn.execute(sql, (now + lease_s, correlation_id, now))})

    def unpark(self, sources: Sequence[str], correlation_ids: Sequence[str]) -> None:
        def call(conn: _Connection) -> None:
            with conn.transaction():
                cur = conn.cursor()
                if sources:
                    cur.executemany(_pg(ParkedSql.DROP), [(s,) for s in sources])
                if correlation_ids:
                    cur.executemany(_pg(ParkedSql.RELEASE), [(c,) for c in correlation_ids])

        self._run(call)

    def parked_count(self) -> int:
        def call(conn: _Connection) -> int:
            row = conn.execute(ParkedSql.COUNT).fetchone()
            return int(row[0]) if row else 0

        return self._run(call)
