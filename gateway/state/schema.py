"""The state schema of each backend as ordered, numbered migrations; `schema_version` records those applied.

A step is a tuple of statements run in one transaction together with its `schema_version` row, so a database is
always at exactly one version. Steps are only ever appended: a released step is never edited (a database that
applied it would never see the change). The backends apply them at start-up (sqlite.py under BEGIN IMMEDIATE,
postgres.py under a transaction-scoped advisory lock, so replicas starting together take turns).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


SQLITE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
    "applied_at REAL NOT NULL)"
)
POSTGRES_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


def _requests_step(*, real: str, blob: str) -> Migration:
    """Version 2, the same table in both dialects: one row per request-reply call, keyed by its correlation id."""
    return Migration(2, "request-reply: one row per request, its deadline, reply and compensation", (
        f"""CREATE TABLE requests (
            correlation_id TEXT PRIMARY KEY,
            platform TEXT NOT NULL,
            message_id TEXT UNIQUE,
            type TEXT NOT NULL,
            to_region TEXT NOT NULL,
            reply_type TEXT NOT NULL,
            idempotency_key TEXT,
            status TEXT NOT NULL,
            created_at {real} NOT NULL,
            deadline_at {real} NOT NULL,
            replied_at {real},
            reply_id TEXT,
            reply_type_got TEXT,
            reply_from TEXT,
            reply_envelope {blob},
            reply_signature TEXT,
            compensation_type TEXT,
            compensation_payload TEXT,
            compensation_id TEXT
        )""",
        "CREATE INDEX requests_open ON requests(status, deadline_at)",
        "ALTER TABLE inbox ADD COLUMN late_reply_to TEXT",  # a late result delivered as any message: marked
    ))


def _parked_step(*, seq: str, real: str, blob: str) -> Migration:
    """Version 3: messages set aside until their claim-checked files are decided (gateway/files/parking.py)."""
    return Migration(3, "parked messages: waiting for their files, or behind one of their conversation that is", (
        f"""CREATE TABLE parked (
            seq {seq},
            source TEXT NOT NULL UNIQUE,
            message_id TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            value {blob} NOT NULL,
            meta {blob} NOT NULL,
            file_ids TEXT NOT NULL,
            parked_at {real} NOT NULL,
            deadline_at {real} NOT NULL,
            leased_until {real} NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX parked_conversation ON parked(correlation_id, seq)",
    ))


def _retention_step() -> Migration:
    """Version 4, the same in both dialects: the timestamp indexes the retention sweep reads (retention.py)."""
    return Migration(4, "retention: indexes on the timestamps past which rows are swept", (
        "CREATE INDEX inbox_acked ON inbox(acked_at) WHERE acked_at IS NOT NULL",  # the pending rows stay out
        "CREATE INDEX seen_at ON seen(at)",
        "CREATE INDEX sent_created ON sent(created_at)",
        "CREATE INDEX idempotency_created ON idempotency(created_at)",
        "CREATE INDEX requests_deadline ON requests(deadline_at)",
    ))


# Version 1 is the schema the SQLite store had before it was versioned; IF NOT EXISTS lets a file written by that
# code adopt it as it is.
SQLITE: tuple[Migration, ...] = (
    Migration(1, "sent messages, idempotency keys, dedupe marks, pull inbox, used JWT ids, named values", (
        """CREATE TABLE IF NOT EXISTS sent (
            id TEXT PRIMARY KEY,
            platform TEXT NOT NULL,
            type TEXT NOT NULL,
            to_region TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            envelope_sha256 TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS sent_events (
            id TEXT NOT NULL,
            at REAL NOT NULL,
            stage TEXT NOT NULL,
            detail TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS sent_events_id ON sent_events(id)",
        """CREATE TABLE IF NOT EXISTS idempotency (
            platform TEXT NOT NULL,
            key TEXT NOT NULL,
            request_sha256 TEXT NOT NULL,
            message_id TEXT NOT NULL,
            envelope BLOB NOT NULL,
            signature TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (platform, key)
        )""",
        """CREATE TABLE IF NOT EXISTS seen (
            id TEXT PRIMARY KEY,
            outcome TEXT NOT NULL,
            source TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS inbox (
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
        )""",
        "CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(platform, acked_at, seq)",
        "CREATE TABLE IF NOT EXISTS jti (jti TEXT PRIMARY KEY, exp REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
    )),
    _requests_step(real="REAL", blob="BLOB"),
    _parked_step(seq="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB"),
    _retention_step(),
)

# The same tables in PostgreSQL. sent_events gets a key of its own (SQLite's rowid keeps their order there), the
# pending inbox a partial index (what lease and depth read), jti an index on exp (the purge).
POSTGRES: tuple[Migration, ...] = (
    Migration(1, "sent messages, idempotency keys, dedupe marks, pull inbox, used JWT ids, named values", (
        """CREATE TABLE sent (
            id TEXT PRIMARY KEY,
            platform TEXT NOT NULL,
            type TEXT NOT NULL,
            to_region TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            envelope_sha256 TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE sent_events (
            n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            stage TEXT NOT NULL,
            detail TEXT
        )""",
        "CREATE INDEX sent_events_id ON sent_events(id, n)",
        """CREATE TABLE idempotency (
            platform TEXT NOT NULL,
            key TEXT NOT NULL,
            request_sha256 TEXT NOT NULL,
            message_id TEXT NOT NULL,
            envelope BYTEA NOT NULL,
            signature TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (platform, key)
        )""",
        """CREATE TABLE seen (
            id TEXT PRIMARY KEY,
            outcome TEXT NOT NULL,
            source TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE inbox (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            platform TEXT NOT NULL,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            from_region TEXT NOT NULL,
            envelope BYTEA NOT NULL,
            signature TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            leased_until DOUBLE PRECISION NOT NULL DEFAULT 0,
            acked_at DOUBLE PRECISION
        )""",
        "CREATE INDEX inbox_pending ON inbox(platform, seq) WHERE acked_at IS NULL",
        "CREATE TABLE jti (jti TEXT PRIMARY KEY, exp DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX jti_exp ON jti(exp)",
        "CREATE TABLE kv (k TEXT PRIMARY KEY, v BYTEA NOT NULL)",
    )),
    _requests_step(real="DOUBLE PRECISION", blob="BYTEA"),
    _parked_step(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", real="DOUBLE PRECISION", blob="BYTEA"),
    _retention_step(),
)


def check_steps(steps: tuple[Migration, ...]) -> int:
    """The latest version of `steps`, which must be numbered 1, 2, 3, ... in order."""
    for i, step in enumerate(steps, start=1):
        if step.version != i:
            raise AssertionError(f"migration {step.version} out of order (expected {i})")
    return len(steps)


LATEST = check_steps(SQLITE)
assert check_steps(POSTGRES) == LATEST, "both backends are at the same schema version"
