"""The auditors' index of `yrdx.audit` in SQLite or PostgreSQL, and the trace of one message's conversation.

`update_index` reads the segments the gateways publish (gateway.audit.model) with a gateway.kafka.reader
follower (outside any group), assigned to every partition and placed at the position stored in the index (the
beginning when none is), and stores each fetched batch in ONE transaction: its records, its checkpoints and the
new position. A process killed at any point therefore resumes exactly where its last transaction ended: nothing
is lost, and the primary key (region, seq, entry) makes a record read twice land once. The `region` column holds
the record's chain id (model.chain_id: the region, or `<REGION>/<instance>` for one of its replicas), so a
region's chains are indexed side by side; a record read back names its region and, for a replica's chain, its
chain, as it was written.

A row is one message-level record (model.entries): a record of trail format 1 or 2, or a record without a
message, is one row with `entry` -1 and reads back exactly as written; a batch record of format 3 is one row per
entry, with the batch record's seq, at, prev_hash and hash and its position `entry`, and reads back as that
entry's view. A message is therefore found in the index by (chain, seq, entry), in any format.

Only a region's own records are indexed as its chain: those of a segment whose checkpoint signature holds against
the trust store (model.segment_fault, the check `yrdx audit verify` makes) and whose records are the run
that checkpoint signs (model.segment_break). Anyone can write to `yrdx.audit`; a forged chain published
first must not take the seqs of the genuine one, which is indexed when it arrives. Every record that is not
indexed as its region's is kept apart in the conflicts table, with its position on the topic and a kind in
`yrdx audit verify`'s words: `forged` (its checkpoint does not hold), `edited` (its records are not the ones the
checkpoint signs) or `rewritten` (another validly signed record holds its region and seq: a fork). Conflicts are
kept entry by entry too, each with the entry's view as its `record` (the whole batch record in every row would
store a batch of n entries n times over), so a trace finds a kept-apart batch record by any message it names.

Two backends behind one small interface: SQLite (stdlib, the embedded default that needs nothing) and
PostgreSQL (psycopg 3, `postgresql://` DSNs). Both are synchronous; async callers run them in a thread
(`asyncio.to_thread`), so a gateway's event loop never waits on the disk.

`trace` answers "what happened to this message": the records of the message, of every message of its
conversation (same correlation_id), of the signed receipts about them (found through `detail.receipt` of the
`receipt_sent`/`receipt_received` records) and of unverifiable copies that claimed one of their ids, ordered
by time, then region, then seq, then entry (journey.journey); and the conflicts that touch it: records kept apart
that name one of its messages or conversations or claim the place (region, seq) of one of its records.
`yrdx audit trace` prints it as a table (format_trace) or JSON, and `GET /v1/audit/messages/{id}` answers the same
JSON.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from gateway.audit.journey import journey
from gateway.audit.model import (
    CHAIN_SEPARATOR,
    AuditFormatError,
    AuditRecord,
    Segment,
    chain_region,
    entries,
    parse_segment,
    record_chain,
    segment_break,
    segment_fault,
)
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.kafka.reader import KafkaError, TopicFollower, partitions_of
from gateway.wire.regions import DEFAULT_TOPICS

__all__ = [
    "AuditIndex", "Batch", "IndexRun", "IndexUnavailable", "check_segments", "current_trace", "current_usage",
    "decode_segments", "default_index_path", "format_trace", "is_dsn", "open_index", "trace", "trace_conflicts",
    "trace_document", "update_index", "usage_document",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Conflict = dict[str, Any]  # {region, seq, hash, kind, reason, partition, offset, record} (and `entry`)
RECEIPT_STAGES = frozenset({"receipt_sent", "receipt_received"})
_COLUMNS = ("message_id", "correlation_id", "ref_id")  # the ones a trace looks records and conflicts up by
# Bump when the tables change: an index of another layout is dropped and rebuilt from the topic (it is a cache
# of the topic, and its positions go with it). 2: conflicts keep the record, its kind and why.
# 3: the `region` columns hold chain ids (a region's replicas).
_SCHEMA_VERSION = "4"  # 4: a row per entry of a batch record (trail format 3): `entry`, in the primary keys
SINGLE = -1  # the `entry` of a row that is a whole record (format 1 or 2, or a record without a message)
_IN_CHUNK = 500  # values per SQL IN (...) list
_MAX_BIGINT = 2**63 - 1


def is_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def default_index_path(config_file: Path) -> Path:
    """Where `yrdx audit index` keeps its SQLite index by default: `var/audit-index.sqlite` next to the config."""
    return config_file.resolve().parent / "var" / "audit-index.sqlite"


# --- what a batch holds -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """One fetch from the topic: its segments (with their partition) and the next offset of each partition."""

    topic: str
    segments: Sequence[tuple[int, Segment]]
    positions: Mapping[int, int]
    skipped: int = 0  # Kafka records that are not well-formed segments (their offsets are passed all the same)
    # index in `segments` -> (kind, why) for the segments that are not their region's own (check_segments): their
    # records go to the conflicts table only
    refused: Mapping[int, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stored:
    """What one batch did, in message-level records (rows: a batch record's entries each count)."""

    new: int  # records indexed for the first time
    conflicts: int  # records kept apart: of refused segments, or whose (region, seq) holds another record
    read: int = 0  # records in the batch


def check_segments(segments: Sequence[tuple[int, Segment]], trust: TrustStore | None) -> dict[int, tuple[str, str]]:
    """The segments that are not their region's own, by index: (`forged`, why) when the checkpoint's signature
    does not hold against `trust`, (`edited`, why) when the records are not the run the checkpoint signs.
    `trust` None checks the records only: every checkpoint is taken as its region's, so the first record indexed
    under a seq stays (for callers that hold no trust store)."""
    refused: dict[int, tuple[str, str]] = {}
    for i, (_, seg) in enumerate(segments):
        forged = segment_fault(seg, trust) if trust is not None else None
        if forged is not None:
            refused[i] = ("forged", forged)
        elif (edited := segment_break(seg)) is not None:
            refused[i] = ("edited", edited)
    return refused


def _valid_record(r: Mapping[str, Any]) -> bool:
    """The types the tables need: a bad record must not stop the indexer on every restart (a poison pill). A batch
    record's entries were checked by parse_segment; their NULs are refused here with the rest of the record."""
    seq = r["seq"]
    return (
        isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= _MAX_BIGINT
        and all(isinstance(r[k], str) for k in ("region", "message_id", "correlation_id", "stage", "at",
                                                "prev_hash", "hash"))
        and (r["envelope_sha256"] is None or isinstance(r["envelope_sha256"], str))
        and isinstance(r["detail"], dict)
        and b"\\u0000" not in orjson.dumps(r)  # PostgreSQL text and jsonb cannot hold NUL
    )


def decode_segments(values: Iterable[tuple[int, int, bytes | None]]) -> tuple[list[tuple[int, Segment]], int]:
    """(partition, offset, value) of `yrdx.audit` records -> the segments and how many were not segments."""
    segments: list[tuple[int, Segment]] = []
    skipped = 0
    for partition, offset, value in values:
        try:
            if value is None:
                raise AuditFormatError("empty value")
            seg = parse_segment(value, offset)
            if not 0 <= seg.checkpoint.seq <= _MAX_BIGINT or not all(_valid_record(r) for r in seg.records):
                raise AuditFormatError("a record field has the wrong type")
        except AuditFormatError as e:
            log.warning("skipping an audit record that is not a segment",
                        extra={"partition": partition, "offset": offset, "error": str(e)})
            skipped += 1
            continue
        segments.append((partition, seg))
    return segments, skipped


def _rows_of(seg: Segment) -> list[tuple[int, AuditRecord]]:
    """(entry, record) of each message-level record of the segment: SINGLE for a whole record, else the position
    of a batch record's entry (taken from the batch record's shape, never from what a record says of itself)."""
    return [(e["entry"] if "entries" in r else SINGLE, e) for r in seg.records for e in entries(r)]


def _ref_id(detail: Mapping[str, Any]) -> str | None:
    """The other id a record names: the receipt it was sent in, or the id an unverifiable copy claimed."""
    ref = detail.get("receipt", detail.get("claimed_id"))
    return ref if isinstance(ref, str) and ref else None


@dataclass(frozen=True, slots=True)
class _Rows:
    """A batch as table rows (JSON columns made by the backend's `json`)."""

    # (partition, offset, entry, record) of the segments that are their region's, a row per message-level record
    own: list[tuple[int, int, int, AuditRecord]]
    refused: list[tuple[Any, ...]]  # conflict rows of the records of the other segments
    segments: list[tuple[Any, ...]]  # the checkpoints of the own segments
    json: Callable[[Any], object]

    @classmethod
    def of(cls, batch: Batch, json: Callable[[Any], object]) -> _Rows:
        own, refused, segments = [], [], []
        for i, (partition, seg) in enumerate(batch.segments):
            apart = batch.refused.get(i)
            if apart is not None:
                refused += [_conflict_row(r, entry, *apart, partition, seg.offset, json) for entry, r in _rows_of(seg)]
                continue
            own += [(partition, seg.offset, entry, r) for entry, r in _rows_of(seg)]
            cp = seg.checkpoint
            segments.append((seg.chain, cp.seq, cp.hash, cp.jws, len(seg.records), partition, seg.offset))
        return cls(own, refused, segments, json)

    @property
    def read(self) -> int:
        return len(self.own) + len(self.refused)

    def records(self) -> list[tuple[Any, ...]]:
        """The own rows, each followed by (region, seq, hash) for the test that no other record holds its place."""
        return [(record_chain(r), r["seq"], entry, r["message_id"], r["correlation_id"], r["stage"], r["at"],
                 r["envelope_sha256"], self.json(r["detail"]), _ref_id(r["detail"]), r["prev_hash"], r["hash"],
                 partition, offset, record_chain(r), r["seq"], r["hash"]) for partition, offset, entry, r in self.own]

    def rewritten(self) -> list[tuple[Any, ...]]:
        """For each own row, its conflict row and then (region, seq, hash) for the test that another record
        holds its place (only needed when some own row did not land)."""
        why = "another record is indexed under this region and seq"
        return [(*_conflict_row(r, entry, "rewritten", why, partition, offset, self.json), record_chain(r), r["seq"],
                 r["hash"])
                for partition, offset, entry, r in self.own]


def _conflict_row(r: AuditRecord, entry: int, kind: str, reason: str, partition: int, offset: int,
                  json: Callable[[Any], object]) -> tuple[Any, ...]:
    return (record_chain(r), r["seq"], entry, r["hash"], r["message_id"], r["correlation_id"], _ref_id(r["detail"]),
            kind, reason, json(r), partition, offset)


# --- the two backends ---------------------------------------------------------------------------------------


class _Backend(Protocol):
    """What the index needs from a database. Every method is one transaction."""

    def positions(self, topic: str) -> dict[int, int]: ...
    def store(self, batch: Batch) -> Stored: ...
    def select(self, table: str, column: str, values: Sequence[object], region: str | None = None
               ) -> list[dict[str, Any]]: ...
    def counts(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def select_subject(self, region: str, stage: str, subjects: Sequence[str]) -> list[dict[str, Any]]: ...


# What `select` reads of each table, the keys of the dicts it returns (in column order) and its JSON column.
_RECORD_KEYS = ("seq", "region", "message_id", "correlation_id", "stage", "at", "envelope_sha256", "detail",
                "prev_hash", "hash", "entry")
_CONFLICT_KEYS = ("region", "seq", "hash", "kind", "reason", "partition", "offset", "record", "entry")
_TABLES: Mapping[str, tuple[str, tuple[str, ...], str]] = {
    "audit_records": (", ".join(_RECORD_KEYS), _RECORD_KEYS, "detail"),
    "audit_conflicts": ("region, seq, hash, kind, reason, topic_partition, topic_offset, record, entry",
                        _CONFLICT_KEYS, "record"),
}

# Another record under the same (region, seq): the rows of one record all carry its hash.
_ANOTHER_RECORD = "(SELECT 1 FROM audit_records WHERE region = ? AND seq = ? AND hash <> ?)"
# A row lands unless another record holds its (region, seq): a fork's batch record with more entries, or a single
# record in place of a batch, would otherwise add rows beside the record indexed first.
_INSERT_RECORD = ("INSERT INTO audit_records (region, seq, entry, message_id, correlation_id, stage, at, "  # noqa: S608
                  "envelope_sha256, detail, ref_id, prev_hash, hash, topic_partition, topic_offset) "
                  f"SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS {_ANOTHER_RECORD} "
                  "ON CONFLICT (region, seq, entry) DO NOTHING")
_INSERT_CONFLICT = ("INSERT INTO audit_conflicts (region, seq, entry, hash, message_id, correlation_id, ref_id, "
                    "kind, reason, record, topic_partition, topic_offset) ")
_INSERT_REFUSED = _INSERT_CONFLICT + "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# An own row that did not land: a conflict only if the record indexed under its (region, seq) is another one.
_INSERT_REWRITTEN = _INSERT_CONFLICT + (  # noqa: S608 (constants)
    f"SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS {_ANOTHER_RECORD} ON CONFLICT DO NOTHING")
_INSERT_SEGMENT = ("INSERT INTO audit_segments (region, seq, hash, jws, records, topic_partition, topic_offset) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_COUNTS = ("SELECT (SELECT count(*) FROM audit_records), (SELECT count(*) FROM audit_segments), "
           "(SELECT count(*) FROM audit_conflicts)")


def _pg(statement: str) -> str:
    """A statement above in psycopg's placeholders."""
    return statement.replace("?", "%s")


# One schema, two dialects: SQLite integers are 64-bit already, PostgreSQL needs BIGINT; JSON is JSONB there.
_SCHEMA_TEMPLATE = """
    CREATE TABLE IF NOT EXISTS audit_records (
        region TEXT NOT NULL, seq {bigint} NOT NULL, entry INTEGER NOT NULL, message_id TEXT NOT NULL,
        correlation_id TEXT NOT NULL, stage TEXT NOT NULL, at TEXT NOT NULL, envelope_sha256 TEXT,
        detail {json} NOT NULL, ref_id TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        topic_partition INTEGER NOT NULL, topic_offset {bigint} NOT NULL,
        PRIMARY KEY (region, seq, entry));
    CREATE INDEX IF NOT EXISTS audit_records_message_id ON audit_records (message_id);
    CREATE INDEX IF NOT EXISTS audit_records_correlation_id ON audit_records (correlation_id);
    CREATE INDEX IF NOT EXISTS audit_records_ref_id ON audit_records (ref_id);
    CREATE TABLE IF NOT EXISTS audit_segments (
        region TEXT NOT NULL, seq {bigint} NOT NULL, hash TEXT NOT NULL, jws TEXT NOT NULL,
        records INTEGER NOT NULL, topic_partition INTEGER NOT NULL, topic_offset {bigint} NOT NULL,
        PRIMARY KEY (region, seq));
    CREATE TABLE IF NOT EXISTS audit_conflicts (
        region TEXT NOT NULL, seq {bigint} NOT NULL, entry INTEGER NOT NULL, hash TEXT NOT NULL,
        message_id TEXT NOT NULL, correlation_id TEXT NOT NULL, ref_id TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL,
        record {json} NOT NULL, topic_partition INTEGER NOT NULL, topic_offset {bigint} NOT NULL,
        PRIMARY KEY (topic_partition, topic_offset, region, seq, entry));
    CREATE INDEX IF NOT EXISTS audit_conflicts_slot ON audit_conflicts (region, seq);
    CREATE INDEX IF NOT EXISTS audit_conflicts_message_id ON audit_conflicts (message_id);
    CREATE INDEX IF NOT EXISTS audit_conflicts_correlation_id ON audit_conflicts (correlation_id);
    CREATE INDEX IF NOT EXISTS audit_conflicts_ref_id ON audit_conflicts (ref_id);
    CREATE TABLE IF NOT EXISTS audit_positions (
        topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset {bigint} NOT NULL,
        PRIMARY KEY (topic, partition));
"""


def _create_schema(db: Any, schema: str) -> None:
    """The tables, inside the caller's transaction; those of another layout (`_SCHEMA_VERSION`) are dropped first.
    `db` is a sqlite3 or a psycopg connection: both take these parameterless statements alike."""
    db.execute("CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM audit_meta WHERE key = 'schema'").fetchone()
    if row is None or row[0] != _SCHEMA_VERSION:
        for table in ("audit_records", "audit_segments", "audit_conflicts", "audit_positions"):
            db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in schema.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"INSERT INTO audit_meta (key, value) VALUES ('schema', '{_SCHEMA_VERSION}') "  # noqa: S608 (constant)
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value")


def _select_sql(table: str, column: str, marks: str, region: str | None) -> str:
    columns, _, _ = _TABLES[table]
    assert column in (*_COLUMNS, "seq"), column
    where = f"{column} {marks}" if region is None else f"region = ? AND {column} {marks}"
    return f"SELECT {columns} FROM {table} WHERE {where}"  # noqa: S608 (fixed names)


class _Sqlite:
    name = "sqlite"

    _SCHEMA = _SCHEMA_TEMPLATE.format(bigint="INTEGER", json="TEXT")

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.where = f"sqlite:{path}"
        # Autocommit mode: every transaction below is an explicit BEGIN IMMEDIATE ... COMMIT. The index object
        # serializes access, so the connection may move between the threads of asyncio.to_thread.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (a trace) never wait for the indexer
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process, which is the case here
        with self._tx() as db:
            _create_schema(db, self._SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def positions(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT partition, next_offset FROM audit_positions WHERE topic = ?", (topic,))
        return {int(p): int(o) for p, o in rows}

    def store(self, batch: Batch) -> Stored:
        rows = _Rows.of(batch, lambda d: orjson.dumps(d).decode())
        with self._tx() as db:
            new = db.executemany(_INSERT_RECORD, rows.records()).rowcount if rows.own else 0
            conflicts = db.executemany(_INSERT_REFUSED, rows.refused).rowcount if rows.refused else 0
            if new < len(rows.own):  # some were known: the same record read again, or a different one (a fork)
                conflicts += db.executemany(_INSERT_REWRITTEN, rows.rewritten()).rowcount
            db.executemany(_INSERT_SEGMENT, rows.segments)
            db.executemany(  # last, in the same transaction: the position never runs ahead of the records
                "INSERT INTO audit_positions (topic, partition, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                [(batch.topic, p, o) for p, o in batch.positions.items()],
            )
        return Stored(new, conflicts, rows.read)

    def select(self, table: str, column: str, values: Sequence[object], region: str | None = None
               ) -> list[dict[str, Any]]:
        _, keys, json_key = _TABLES[table]
        out: list[dict[str, Any]] = []
        for i in range(0, len(values), _IN_CHUNK):
            chunk = values[i:i + _IN_CHUNK]
            sql = _select_sql(table, column, f"IN ({', '.join('?' * len(chunk))})", region)
            for row in self._db.execute(sql, (*([region] if region is not None else []), *chunk)):
                item = dict(zip(keys, row, strict=True))
                item[json_key] = orjson.loads(item[json_key])
                out.append(item)
        return out

    def counts(self) -> dict[str, int]:
        row = self._db.execute(_COUNTS).fetchone()
        return {"records": row[0], "segments": row[1], "conflicts": row[2]}

    def select_subject(self, region: str, stage: str, subjects: Sequence[str]) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(subjects))
        sql = (f"SELECT {_TABLES['audit_records'][0]} FROM audit_records WHERE (region = ? OR region LIKE ?) "  # noqa: S608
               f"AND stage = ? AND json_extract(detail, '$.subject') IN ({marks}) ORDER BY at, region, seq, entry")
        rows = self._db.execute(sql, (region, _replica_chains(region), stage, *subjects))
        return [{**dict(zip(_RECORD_KEYS, row, strict=True)), "detail": orjson.loads(row[7])} for row in rows]

    def close(self) -> None:
        self._db.close()


class _Postgres:
    name = "postgresql"

    _SCHEMA = _SCHEMA_TEMPLATE.format(bigint="BIGINT", json="JSONB")

    def __init__(self, dsn: str) -> None:
        import psycopg  # only those who index into PostgreSQL need it loaded

        self.where = _masked(dsn)
        self._db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        with self._db.transaction():
            # CREATE ... IF NOT EXISTS races with itself in PostgreSQL: indexers starting together take turns.
            self._db.execute("SELECT pg_advisory_xact_lock(hashtext('yrdx.audit_index.schema'))")
            _create_schema(self._db, self._SCHEMA)

    def positions(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT partition, next_offset FROM audit_positions WHERE topic = %s", (topic,))
        return {int(p): int(o) for p, o in rows.fetchall()}

    def store(self, batch: Batch) -> Stored:
        from psycopg.types.json import Jsonb

        rows = _Rows.of(batch, Jsonb)
        with self._db.transaction(), self._db.cursor() as cur:
            new = conflicts = 0
            if rows.own:
                cur.executemany(_pg(_INSERT_RECORD), rows.records())
                new = max(cur.rowcount, 0)
            if rows.refused:
                cur.executemany(_pg(_INSERT_REFUSED), rows.refused)
                conflicts += max(cur.rowcount, 0)
            if new < len(rows.own):
                cur.executemany(_pg(_INSERT_REWRITTEN), rows.rewritten())
                conflicts += max(cur.rowcount, 0)
            cur.executemany(_pg(_INSERT_SEGMENT), rows.segments)
            cur.executemany(
                "INSERT INTO audit_positions (topic, partition, next_offset) VALUES (%s, %s, %s) "
                "ON CONFLICT (topic, partition) DO UPDATE "
                "SET next_offset = GREATEST(audit_positions.next_offset, excluded.next_offset)",
                [(batch.topic, p, o) for p, o in batch.positions.items()],
            )
        return Stored(new, conflicts, rows.read)

    def select(self, table: str, column: str, values: Sequence[object], region: str | None = None
               ) -> list[dict[str, Any]]:
        _, keys, _ = _TABLES[table]
        if not values:
            return []
        sql = _pg(_select_sql(table, column, "= ANY(?)", region))
        rows = self._db.execute(sql, (*([region] if region is not None else []), list(values)))
        return [dict(zip(keys, row, strict=True)) for row in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        row = self._db.execute(_COUNTS).fetchone()
        assert row is not None
        return {"records": int(row[0]), "segments": int(row[1]), "conflicts": int(row[2])}

    def select_subject(self, region: str, stage: str, subjects: Sequence[str]) -> list[dict[str, Any]]:
        sql = (f"SELECT {_TABLES['audit_records'][0]} FROM audit_records WHERE (region = %s OR region LIKE %s) "  # noqa: S608
               "AND stage = %s AND detail->>'subject' = ANY(%s) ORDER BY at, region, seq, entry")
        rows = self._db.execute(sql, (region, _replica_chains(region), stage, list(subjects)))
        return [dict(zip(_RECORD_KEYS, row, strict=True)) for row in rows.fetchall()]

    def close(self) -> None:
        self._db.close()


def _replica_chains(region: str) -> str:
    """A LIKE pattern of the region's replica chains (`SH/...`; the `region` column holds chain ids). Region
    codes are letters: no wildcard to escape."""
    return f"{region}{CHAIN_SEPARATOR}%"


def _masked(dsn: str) -> str:
    """A DSN fit for a log line: the password replaced."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    return dsn


class AuditIndex:
    """The index in one database. Safe to share between threads: calls are serialized."""

    def __init__(self, backend: _Backend, where: str) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self.where = where  # for messages: sqlite:PATH or the DSN without its password

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def positions(self, topic: str = DEFAULT_TOPICS.audit) -> dict[int, int]:
        """partition -> the next offset to read."""
        with self._lock:
            return self._backend.positions(topic)

    def store(self, batch: Batch) -> Stored:
        """The batch's records, checkpoints and positions in one transaction; known records are not doubled."""
        with self._lock:
            return self._backend.store(batch)

    def records_with(self, column: str, values: Collection[str]) -> list[AuditRecord]:
        """The records whose `column` (message_id, correlation_id or ref_id) is one of `values`."""
        return self._select("audit_records", column, values)

    def conflicts_with(self, column: str, values: Collection[str]) -> list[Conflict]:
        """The records kept apart (`Conflict`) whose `column` (as for records_with) is one of `values`."""
        return self._select("audit_conflicts", column, values)

    def conflicts_at(self, region: str, seqs: Collection[int]) -> list[Conflict]:
        """The records kept apart that claim one of these places of the region's chain."""
        return self._select("audit_conflicts", "seq", seqs, region)

    def _select(self, table: str, column: str, values: Collection[Any], region: str | None = None
                ) -> list[dict[str, Any]]:
        wanted = sorted(set(values) - {""})
        if not wanted:
            return []
        with self._lock:
            rows = self._backend.select(table, column, wanted, region)
        return [_as_written(r) for r in rows] if table == "audit_records" else [_entry_kept(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._backend.counts()

    def uses_of(self, region: str, subjects: Collection[str]) -> list[AuditRecord]:
        """The `verified` records of `region` whose `detail.subject` (the holder's pseudonym, relay/purposes.py) is
        one of `subjects`: each is a message that reached the region's platform about that holder. A scan of the
        region's verified records, in chain order."""
        wanted = sorted(set(subjects) - {""})
        if not wanted:
            return []
        with self._lock:
            rows = self._backend.select_subject(region, "verified", wanted)
        return [_as_written(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._backend.close()


def _entry_kept(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its `entry` when it is a whole record (SINGLE): only a batch record's entries have one."""
    if row["entry"] == SINGLE:
        del row["entry"]
    return row


def _as_written(row: dict[str, Any]) -> AuditRecord:
    """A record read back from its row, as model.entries shows it: the `region` column holds the chain id (a
    replica's chain names both), and only a batch record's entry has an `entry`."""
    row = _entry_kept(row)
    chain = row["region"]
    region = chain_region(chain)
    return row if chain == region else {**row, "region": region, "chain": chain}


class IndexUnavailable(RuntimeError):
    """The index database cannot be opened (a server down, a file that cannot be created); says which."""


def open_index(target: str | Path) -> AuditIndex:
    """A `postgresql://` DSN, or the path of a SQLite file (created with its folder when missing)."""
    if isinstance(target, str) and is_dsn(target):
        import psycopg

        try:
            pg = _Postgres(target)
        except psycopg.Error as e:
            raise IndexUnavailable(f"cannot open the audit index at {_masked(target)}: {e}") from e
        return AuditIndex(pg, pg.where)
    try:
        lite = _Sqlite(Path(target))
    except (sqlite3.Error, OSError) as e:
        raise IndexUnavailable(f"cannot open the audit index at {target}: {e}") from e
    return AuditIndex(lite, lite.where)


# --- reading the topic into the index -----------------------------------------------------------------------


@dataclass
class IndexRun:
    """What one `update_index` call did."""

    topic: str
    resumed: dict[int, int] = field(default_factory=dict)  # partition -> stored position it started from
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset after the run
    read: int = 0  # message-level audit records read from the topic (a batch record's entries each count)
    new: int = 0  # of which indexed for the first time
    segments: int = 0
    skipped: int = 0
    conflicts: int = 0

    def summary(self) -> str:
        at = ", ".join(f"{p}={o}" for p, o in sorted(self.positions.items())) or "-"
        return (f"{self.topic}: {self.new} new records indexed ({self.read} read in {self.segments} segments, "
                f"{self.skipped} skipped, {self.conflicts} conflicting); next offsets {at}")


async def update_index(
    kafka: KafkaConfig | str,
    index: AuditIndex,
    *,
    trust: TrustStore | None = None,
    topic: str | None = None,
    follow: asyncio.Event | None = None,
    timeout_s: float | None = None,
    setup_timeout_s: float = 30.0,
) -> IndexRun:
    """Index `topic` (default: the `yrdx.audit` of the namespace of `kafka`) from the stored position: up to its
    end as seen at the start, or, with `follow`, until that event is set. Checkpoints are checked against `trust`
    (check_segments; None: not checked, only for callers that hold no trust store). `timeout_s` bounds the whole
    catch-up: what was fetched by then is stored, and the rest waits for the next call. Raises TimeoutError when
    the broker cannot be reached within the setup time."""
    cfg = KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka
    topic = topic or cfg.topics.audit
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s

    def setup_s() -> float:  # each step of the set-up, within what is left of the whole
        return setup_timeout_s if deadline is None else max(0.0, min(setup_timeout_s, deadline - loop.time()))

    run = IndexRun(topic)
    while True:
        async with asyncio.timeout(setup_s()):
            partitions = await partitions_of(cfg, topic)
        if partitions or follow is None:
            break
        # Following a topic that no gateway has created yet: look again in a moment.
        try:
            await asyncio.wait_for(follow.wait(), 1.0)
            return run
        except TimeoutError:
            continue
    if not partitions:
        return run
    follower = TopicFollower(cfg, topic, fetch_max_wait_ms=cfg.fetch_max_wait_ms)
    try:
        async with asyncio.timeout(setup_s()):
            stored = await asyncio.to_thread(index.positions, topic)
            await follower.start(dict.fromkeys(partitions))  # at the beginning; at the stored positions below
            ends = await follower.end_offsets()
            for p in partitions:
                at = stored.get(p)
                if at is not None and at > ends[p]:
                    log.warning("stored position is past the end of the topic (was it recreated?); reading it "
                                "from the beginning", extra={"partition": p, "stored": at})
                    at = None
                if at is not None:
                    await follower.seek({p: at})
                    run.resumed[p] = at
            for p in partitions:
                run.positions[p] = await follower.position(p)
        remaining = set(partitions) if follow else {p for p in partitions if run.positions[p] < ends[p]}
        while remaining and not (follow and follow.is_set()):
            wait_ms = 500 if follow else 200
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    break
                wait_ms = max(1, min(wait_ms, int(left * 1000)))
            records = await follower.poll(timeout_ms=wait_ms, partitions=remaining)
            if records:
                # A record the client library cannot decode comes flawed, with an empty value: skipped as not a
                # segment, and the position moves past it.
                segments, skipped = decode_segments((r.partition, r.offset, r.value) for r in records)
                positions: dict[int, int] = {}
                for r in records:
                    positions[r.partition] = max(positions.get(r.partition, 0), r.offset + 1)
                result = await asyncio.to_thread(_check_and_store, index, Batch(topic, segments, positions, skipped),
                                                 trust)
                run.read += result.read
                run.segments += len(segments)
                run.skipped += skipped
                run.new += result.new
                run.conflicts += result.conflicts
                run.positions.update(positions)
            if not follow:
                remaining = {p for p in remaining if await follower.position(p) < ends[p]}
    finally:
        await follower.stop()
    return run


def _check_and_store(index: AuditIndex, batch: Batch, trust: TrustStore | None) -> Stored:
    """check_segments then store, in the caller's worker thread: signatures cost CPU the event loop must not."""
    return index.store(replace(batch, refused=check_segments(batch.segments, trust)))


# --- the trace ----------------------------------------------------------------------------------------------


def _receipts(records: Iterable[AuditRecord]) -> set[str]:
    """The ids of the receipt envelopes that `receipt_sent`/`receipt_received` records name."""
    return {
        str(r["detail"]["receipt"]) for r in records
        if r["stage"] in RECEIPT_STAGES and isinstance(r["detail"].get("receipt"), str)
    }


def _conversations(records: Iterable[AuditRecord], receipts: Collection[str]) -> set[str]:
    """The correlation ids of the messages (not of receipts) these records are about. A `receipt_received` record
    carries the correlation id of the receipt envelope (one receipt answers a whole batch of an origin's
    messages, from any conversation), so it does not say which conversation its message belongs to."""
    return {
        r["correlation_id"] for r in records
        if r["correlation_id"] and r["stage"] != "receipt_received" and r["message_id"] not in receipts
    }


def place(r: Mapping[str, Any]) -> tuple[str, int, int]:
    """Where a message-level record is in its chain: (chain, seq, entry), SINGLE for a whole record."""
    return record_chain(r), r["seq"], r.get("entry", SINGLE)


def trace(index: AuditIndex, message_id: str) -> list[AuditRecord]:
    """The records of the message, of its conversation and of the receipts about them, in time order
    (at, region, seq, then entry). Empty when no record names the id."""
    found: dict[tuple[str, int, int], AuditRecord] = {}

    def add(records: Iterable[AuditRecord]) -> None:
        for r in records:
            found[place(r)] = r

    # The id itself, or a receipt or an unverifiable copy referring to it.
    first = index.records_with("message_id", [message_id]) + index.records_with("ref_id", [message_id])
    if not first:
        return []
    add(first)
    conversation = index.records_with("correlation_id", _conversations(first, _receipts(first)))
    add(conversation)
    ids = {message_id} | {r["message_id"] for r in conversation}
    add(index.records_with("message_id", ids))
    add(index.records_with("ref_id", ids))  # copies that failed verification but claimed one of the ids
    # Each receipt's own arrival back at the origin (received, verified), not the other messages it answers.
    add(index.records_with("message_id", _receipts(found.values()) - ids))
    # journey's sort is stable: a batch record's entries (one at, region and seq) stay in entry order
    return journey([found[k] for k in sorted(found)])


def trace_conflicts(index: AuditIndex, message_id: str, records: Sequence[AuditRecord]) -> list[Conflict]:
    """The records kept apart from the index that touch a trace (its `records`, of `message_id`): those naming
    one of its messages, receipts or conversations, and those claiming the (region, seq) of one of its records
    (a forged record in place of a genuine one need not name the same message). By region, seq, then position."""
    ids = {message_id} | {r["message_id"] for r in records} | _receipts(records)
    ids |= {ref for r in records if (ref := _ref_id(r["detail"])) is not None}
    found = [*index.conflicts_with("message_id", ids), *index.conflicts_with("ref_id", ids),
             *index.conflicts_with("correlation_id", {r["correlation_id"] for r in records})]
    seqs: dict[str, set[int]] = {}
    for r in records:
        seqs.setdefault(record_chain(r), set()).add(r["seq"])
    for region, at in sorted(seqs.items()):
        found += index.conflicts_at(region, at)
    unique = {(c["partition"], c["offset"], *place(c)): c for c in found}  # found by several lookups
    return sorted(unique.values(), key=lambda c: (place(c), c["partition"], c["offset"]))


def trace_document(index: AuditIndex, message_id: str) -> dict[str, Any] | None:
    """The JSON of `yrdx audit trace --json` and of GET /v1/audit/messages/{id}; None when nothing is known (no
    record and no conflict names the id)."""
    records = trace(index, message_id)
    conflicts = trace_conflicts(index, message_id, records)
    if not records and not conflicts:
        return None
    receipts = _receipts(records)
    return {
        "message_id": message_id,
        "correlation_ids": sorted(_conversations(records, receipts)),
        # in the order of their first record
        "message_ids": list(dict.fromkeys(r["message_id"] for r in records
                                          if r["message_id"] and r["message_id"] not in receipts)),
        "receipt_ids": sorted(receipts),
        "regions": sorted({r["region"] for r in records}),
        # message id -> x5t#S256 of the certificate whose key signed it, as the receiving gateway verified it
        "signers": {r["message_id"]: r["detail"]["signer"] for r in records
                    if r["stage"] == "verified" and isinstance(r["detail"].get("signer"), str)},
        "records": records,
        # records on yrdx.audit that are not indexed as their region's (forged, edited, rewritten) and touch these
        "conflicts": conflicts,
    }


def usage_document(index: AuditIndex, region: str, subjects: Collection[str]) -> dict[str, Any]:
    """GET /v1/usage: who used the holder's data or licences in `region`, when and for what (codes, no names)."""
    uses = []
    for r in index.uses_of(region, subjects):
        d = r["detail"]
        operator = {k: d[f"operator_{k}"] for k in ("id", "role", "department") if f"operator_{k}" in d}
        uses.append({"at": r["at"], "message_id": r["message_id"], "correlation_id": r["correlation_id"],
                     "type": d.get("type"), "from": d.get("sender"), "subject": d["subject"],
                     "operator": operator or None, "use_cause": d.get("use_cause")})
    return {"region": region, "subjects": sorted(set(subjects)), "uses": uses}


async def current_usage(kafka: KafkaConfig, target: str, region: str, subjects: Collection[str],
                        update_timeout_s: float = 2.0, *, trust: TrustStore | None = None) -> dict[str, Any]:
    """As `current_trace`: the index brought up to date (bounded), then the usage of the subjects."""
    return await _from_current_index(kafka, target, update_timeout_s, trust,
                                     lambda index: usage_document(index, region, subjects))


def _seq_shown(r: Mapping[str, Any]) -> str:
    """A record's seq as the table shows it: `41.3` for entry 3 of batch record 41."""
    return f"{r['seq']}.{r['entry']}" if "entry" in r else str(r["seq"])


def _short_id(value: str) -> str:
    return value[-12:]  # a UUIDv7 begins with its timestamp, so ids of one conversation differ at the end


def format_trace(doc: Mapping[str, Any]) -> str:
    """A readable table of a trace document: one line per record, in time order (SEQ `41.3`: batch record 41's
    entry 3)."""
    # The signer of the very envelope a row is about: a tampered copy that claims the id shows none.
    signers = {(r["message_id"], r["envelope_sha256"]): str(r["detail"]["signer"]) for r in doc["records"]
               if r["stage"] == "verified" and isinstance(r["detail"].get("signer"), str)}
    receipts = set(doc["receipt_ids"])
    conflicted = f"; {len(doc['conflicts'])} CONFLICTING records (below)" if doc.get("conflicts") else ""
    head = [
        f"message {doc['message_id']}",
        f"conversation {', '.join(doc['correlation_ids']) or '-'}: {len(doc['message_ids'])} messages, "
        f"{len(receipts)} receipts, {len(doc['records'])} records in {', '.join(doc['regions']) or '-'}{conflicted}",
        "ids by their last 12 characters, hashes by their first 12; signer = x5t#S256 of the signing certificate",
        "",
    ]
    rows = [("AT", "REGION", "SEQ", "STAGE", "MESSAGE", "SIGNER", "ENVELOPE", "RECORD", "DETAIL")]
    for r in doc["records"]:
        detail = " ".join(
            f"{k}={_short_id(str(v)) if k in ('receipt', 'claimed_id') else v}"
            for k, v in sorted(r["detail"].items()) if k != "signer"
        )
        msg = r["message_id"]
        rows.append((
            r["at"], record_chain(r), _seq_shown(r), r["stage"],
            (_short_id(msg) + (" (receipt)" if msg in receipts else "")) if msg else "-",
            signers.get((msg, r["envelope_sha256"]), "-"), (r["envelope_sha256"] or "-")[:12], r["hash"][:12], detail,
        ))
    lines = _table(rows)
    conflicts = doc.get("conflicts") or []
    if conflicts:
        lines += ["", f"CONFLICTS: {len(conflicts)} records on the audit topic are not indexed as their region's "
                  "(forged: the checkpoint does not hold; edited: the records are not those it signs; rewritten: "
                  "another validly signed record holds that seq)", ""]
        rows = [("REGION", "SEQ", "KIND", "AT", "STAGE", "MESSAGE", "RECORD", "OFFSET", "REASON")]
        for c in conflicts:
            r = c["record"]
            rows.append((c["region"], _seq_shown(c), c["kind"], str(r.get("at", "-")), str(r.get("stage", "-")),
                         _short_id(str(r.get("message_id") or "-")), str(c["hash"])[:12],
                         f"{c['partition']}:{c['offset']}", c["reason"]))
        lines += _table(rows)
    return "\n".join(head + lines)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell, the last one left as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    return [line.rstrip() for line in lines]


async def current_trace(
    kafka: KafkaConfig, target: str, message_id: str, update_timeout_s: float = 2.0, *,
    trust: TrustStore | None = None,
) -> dict[str, Any] | None:
    """For the gateway's HTTP route: bring the index up to date (bounded, checkpoints checked against `trust`:
    the gateway's own), then trace. A broker that cannot be reached in time leaves the index as it is: the
    answer is then what was indexed before."""
    return await _from_current_index(kafka, target, update_timeout_s, trust,
                                     lambda index: trace_document(index, message_id))


async def _from_current_index(kafka: KafkaConfig, target: str, update_timeout_s: float, trust: TrustStore | None,
                              query: Callable[[AuditIndex], _T]) -> _T:
    index = await asyncio.to_thread(open_index, target)
    try:
        try:
            await update_index(kafka, index, trust=trust, timeout_s=update_timeout_s,
                               setup_timeout_s=update_timeout_s)
        except (TimeoutError, KafkaError, OSError) as e:
            log.warning("audit index not updated; answering from what it holds", extra={"error": repr(e)})
        return await asyncio.to_thread(query, index)
    finally:
        await asyncio.to_thread(index.close)
