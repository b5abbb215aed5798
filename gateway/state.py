"""The gateway's embedded state (SQLite): what it sent, what it has seen, the pull inbox, used JWT ids.

One connection used from the event loop thread. Statements are short and WAL with synchronous=NORMAL keeps
a commit in the tens of microseconds; each public method is one transaction, so a crash leaves either the
whole step or none of it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    type TEXT NOT NULL,
    to_region TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    envelope_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_events (
    id TEXT NOT NULL,
    at REAL NOT NULL,
    stage TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS sent_events_id ON sent_events(id);
CREATE TABLE IF NOT EXISTS idempotency (
    platform TEXT NOT NULL,
    key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    message_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    signature TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (platform, key)
);
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    source TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    from_region TEXT NOT NULL,
    envelope BLOB NOT NULL,
    signature TEXT NOT NULL,
    received_at REAL NOT NULL,
    leased_until REAL NOT NULL DEFAULT 0,
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(platform, acked_at, seq);
CREATE TABLE IF NOT EXISTS jti (
    jti TEXT PRIMARY KEY,
    exp REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    k TEXT PRIMARY KEY,
    v BLOB NOT NULL
);
"""


# Statuses only move forward (accepted < publish_failed < published < delivered/rejected): a peer's receipt can
# overtake the local 'published' update, which must not undo it.
_UPSERT_SENT = """
INSERT INTO sent VALUES (?,?,?,?,?,?,?,?,?)
ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated_at=excluded.updated_at
WHERE (CASE excluded.status WHEN 'accepted' THEN 0 WHEN 'publish_failed' THEN 1 WHEN 'published' THEN 2 ELSE 3 END)
    > (CASE sent.status WHEN 'accepted' THEN 0 WHEN 'publish_failed' THEN 1 WHEN 'published' THEN 2 ELSE 3 END)
"""


# A delivered id stays delivered; a rejected one may be decided again (a replayed dead letter), and then the
# new outcome and source replace the old.
_MARK_SEEN = """
INSERT INTO seen VALUES (?,?,?,?)
ON CONFLICT(id) DO UPDATE SET outcome=excluded.outcome, source=excluded.source, at=excluded.at
WHERE seen.outcome != 'delivered'
"""


@dataclass(frozen=True, slots=True)
class SentMessage:
    id: str
    platform: str
    type: str
    to_region: str
    correlation_id: str
    envelope_sha256: str
    status: str
    history: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    request_sha256: str
    message_id: str
    envelope: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class InboxItem:
    seq: int
    id: str
    type: str
    from_region: str
    envelope: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class Decision:
    """How a received message id was decided, and from which record (topic:partition:offset)."""

    id: str
    outcome: str  # "delivered" or a rejection code
    source: str


@dataclass(frozen=True, slots=True)
class InboxDelivery:
    """A verified message queued for a pull-inbox platform."""

    platform: str
    id: str
    type: str
    from_region: str
    envelope: bytes
    signature: str
    source: str


@dataclass(frozen=True, slots=True)
class ReceiptItem:
    """One item of a peer's signed receipt, as the origin applies it."""

    message_id: str
    envelope_sha256: str
    outcome: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewSent:
    id: str
    platform: str
    type: str
    to_region: str
    correlation_id: str
    envelope_sha256: str


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self, statements: Iterable[tuple[str, Sequence[Any] | Iterable[Sequence[Any]], bool]]) -> None:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for sql, params, many in statements:
                if many:
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)  # type: ignore[arg-type]
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # --- origin side: what this gateway sent ------------------------------------------------------------

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

    def apply_receipts(self, by: str, items: Sequence[ReceiptItem], receipt: Decision) -> list[tuple[str, str]]:
        """Apply a peer's receipt items (message id, envelope sha256, outcome, detail) in one transaction and mark
        the receipt seen. Returns (outcome applied, the message's correlation id) per item; the outcome is
        'unmatched' where the message is not one this gateway sent to `by` with that exact hash."""
        now = time.time()
        known: dict[str, tuple[str, str, str]] = {}
        ids = [i.message_id for i in items]
        for k in range(0, len(ids), 500):
            chunk = ids[k:k + 500]
            marks = ",".join("?" * len(chunk))
            columns = "id, envelope_sha256, to_region, correlation_id"
            sql = f"SELECT {columns} FROM sent WHERE id IN ({marks})"  # noqa: S608 (placeholders only)
            known.update((r[0], (r[1], r[2], r[3])) for r in self._db.execute(sql, chunk))
        updates, events = [], []
        applied: list[tuple[str, str]] = []
        for item in items:
            row = known.get(item.message_id)
            if row is None or row[:2] != (item.envelope_sha256, by):
                applied.append(("unmatched", ""))
                continue
            updates.append((item.outcome, now, item.message_id))
            events.append((item.message_id, now, item.outcome, orjson.dumps(item.detail).decode()))
            applied.append((item.outcome, row[2]))
        self._tx([
            ("UPDATE sent SET status=?, updated_at=? WHERE id=?", updates, True),
            ("INSERT INTO sent_events VALUES (?,?,?,?)", events, True),
            ("INSERT OR IGNORE INTO seen VALUES (?,?,?,?)", (receipt.id, receipt.outcome, receipt.source, now), False),
        ])
        return applied

    def sent(self, msg_id: str) -> SentMessage | None:
        row = self._db.execute(
            "SELECT id, platform, type, to_region, correlation_id, envelope_sha256, status FROM sent WHERE id=?",
            (msg_id,),
        ).fetchone()
        if row is None:
            return None
        events = self._db.execute(
            "SELECT at, stage, detail FROM sent_events WHERE id=? ORDER BY rowid", (msg_id,)
        ).fetchall()
        history = []
        for at, stage, detail in events:
            event: dict[str, Any] = {"stage": stage, "at": at}
            if detail:
                try:
                    event["detail"] = orjson.loads(detail)
                except orjson.JSONDecodeError:
                    event["detail"] = detail
            history.append(event)
        msg_id_, platform, msg_type, to_region, correlation_id, sha, status = row
        return SentMessage(msg_id_, platform, msg_type, to_region, correlation_id, sha, status, history)

    # --- idempotency keys ---------------------------------------------------------------------------------

    def idempotent(self, platform: str, key: str) -> IdempotentRequest | None:
        row = self._db.execute(
            "SELECT request_sha256, message_id, envelope, signature FROM idempotency "
            "WHERE platform=? AND key=?",
            (platform, key),
        ).fetchone()
        return IdempotentRequest(*row) if row else None

    def remember_idempotent(self, platform: str, key: str, req: IdempotentRequest) -> None:
        self._tx([(
            "INSERT OR IGNORE INTO idempotency VALUES (?,?,?,?,?,?,?)",
            (platform, key, req.request_sha256, req.message_id, req.envelope, req.signature, time.time()),
            False,
        )])

    # --- receiving side: dedupe and the pull inbox -------------------------------------------------------

    def seen(self, ids: Sequence[str]) -> dict[str, Decision]:
        """id -> its decision, for the ids already decided. The decision's `source` tells a re-read of the same
        record after a restart from a second copy of the message."""
        found: dict[str, Decision] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, outcome, source FROM seen WHERE id IN ({marks})"  # noqa: S608 (placeholders only)
            found.update((r[0], Decision(r[0], r[1], r[2])) for r in self._db.execute(sql, chunk))
        return found

    def mark_seen(self, decided: Sequence[Decision]) -> None:
        now = time.time()
        self._tx([(_MARK_SEEN, [(d.id, d.outcome, d.source, now) for d in decided], True)])

    def deliver_to_inbox(self, items: Sequence[InboxDelivery]) -> None:
        """Queued and marked seen (delivered) in one transaction: a message lands in the inbox exactly once."""
        now = time.time()
        self._tx([
            ("INSERT OR IGNORE INTO inbox (platform, id, type, from_region, envelope, signature, received_at) "
             "VALUES (?,?,?,?,?,?,?)",
             [(i.platform, i.id, i.type, i.from_region, i.envelope, i.signature, now) for i in items], True),
            (_MARK_SEEN, [(i.id, "delivered", i.source, now) for i in items], True),
        ])

    def lease_inbox(self, platform: str, limit: int, lease_s: float = 60.0) -> list[InboxItem]:
        now = time.time()
        rows = self._db.execute(
            "SELECT seq, id, type, from_region, envelope, signature FROM inbox "
            "WHERE platform=? AND acked_at IS NULL AND leased_until<? ORDER BY seq LIMIT ?",
            (platform, now, limit),
        ).fetchall()
        if rows:
            self._tx([("UPDATE inbox SET leased_until=? WHERE seq=?", [(now + lease_s, r[0]) for r in rows], True)])
        return [InboxItem(*r) for r in rows]

    def ack_inbox(self, platform: str, ids: Sequence[str]) -> int:
        now = time.time()
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        changed = 0
        for i in ids:
            cur.execute(
                "UPDATE inbox SET acked_at=? WHERE platform=? AND id=? AND acked_at IS NULL", (now, platform, i)
            )
            changed += cur.rowcount
        cur.execute("COMMIT")
        return changed

    def inbox_depth(self) -> int:
        row = self._db.execute("SELECT count(*) FROM inbox WHERE acked_at IS NULL").fetchone()
        return int(row[0])

    # --- single-use JWT ids ------------------------------------------------------------------------------

    def use_jti(self, jti: str, exp: float) -> bool:
        """True the first time a jti is presented, False on a replay."""
        cur = self._db.execute("INSERT OR IGNORE INTO jti VALUES (?,?)", (jti, exp))
        return cur.rowcount == 1

    def purge_jti(self) -> None:
        self._db.execute("DELETE FROM jti WHERE exp < ?", (time.time() - 60,))

    # --- small named values (audit chain head) -----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT v FROM kv WHERE k=?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT INTO kv VALUES (?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (key, value))
