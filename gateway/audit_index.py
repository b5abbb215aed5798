"""The auditors' index of `yrdx.audit` and the trace of one message's conversation (DESIGN.md section 6).

`update_index` reads the segments the gateways publish (gateway.audit_model) with a consumer outside any group,
assigned to every partition and placed at the position stored in the index (the beginning when none is), and
stores each fetched batch in ONE transaction: its records, its checkpoints and the new position. A process
killed at any point therefore resumes exactly where its last transaction ended: nothing is lost, and the
primary key (region, seq) makes a record read twice land once. A different record with a seq already indexed
(a rewritten or forked chain) is not dropped silently: it is kept in the conflicts table for `yrdx audit verify`.

Two backends behind one small interface: SQLite (stdlib, the embedded default that needs nothing) and
PostgreSQL (psycopg 3, `postgresql://` DSNs). Both are synchronous; async callers run them in a thread
(`asyncio.to_thread`), so a gateway's event loop never waits on the disk.

`trace` answers "what happened to this message": the records of the message, of every message of its
conversation (same correlation_id), of the signed receipts about them (found through `detail.receipt` of the
`receipt_sent`/`receipt_received` records) and of unverifiable copies that claimed one of their ids, ordered
by time, then region, then seq (`gateway.trace.journey`). `yrdx audit trace` prints it as a table or JSON, and
`GET /v1/audit/messages/{id}` answers the same JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.audit_model import AuditFormatError, Segment, parse_segment
from gateway.config import ConfigError, GatewayConfig, KafkaConfig, load_config
from gateway.kafka.transport import client_options
from gateway.regions import DEFAULT_TOPICS
from gateway.trace import _partitions, journey

__all__ = [
    "AuditIndex", "Batch", "IndexRun", "IndexUnavailable", "add_cli", "current_trace", "decode_segments",
    "default_index_path", "format_trace", "is_dsn", "open_index", "trace", "trace_document", "update_index",
]

log = logging.getLogger(__name__)

AuditRecord = dict[str, Any]
RECEIPT_STAGES = frozenset({"receipt_sent", "receipt_received"})
_COLUMNS = ("message_id", "correlation_id", "ref_id")  # the ones a trace looks records up by
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


@dataclass(frozen=True, slots=True)
class Stored:
    new: int  # records indexed for the first time
    conflicts: int  # records whose (region, seq) is indexed with a different hash


def _valid_record(r: Mapping[str, Any]) -> bool:
    """The types the tables need: a bad record must not stop the indexer on every restart (a poison pill)."""
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


def _ref_id(detail: Mapping[str, Any]) -> str | None:
    """The other id a record names: the receipt it was sent in, or the id an unverifiable copy claimed."""
    ref = detail.get("receipt", detail.get("claimed_id"))
    return ref if isinstance(ref, str) and ref else None


def _record_rows(batch: Batch, detail: Callable[[dict[str, Any]], object]) -> list[tuple[Any, ...]]:
    return [
        (r["region"], r["seq"], r["message_id"], r["correlation_id"], r["stage"], r["at"], r["envelope_sha256"],
         detail(r["detail"]), _ref_id(r["detail"]), r["prev_hash"], r["hash"], partition, seg.offset)
        for partition, seg in batch.segments
        for r in seg.records
    ]


def _segment_rows(batch: Batch) -> list[tuple[Any, ...]]:
    return [
        (seg.region, seg.checkpoint.seq, seg.checkpoint.hash, seg.checkpoint.jws, len(seg.records), partition,
         seg.offset)
        for partition, seg in batch.segments
    ]


def _conflict_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # (region, seq, hash, partition, offset) to insert, then (region, seq, hash) for the EXISTS test
    return [(r[0], r[1], r[10], r[11], r[12], r[0], r[1], r[10]) for r in rows]


# --- the two backends ---------------------------------------------------------------------------------------


class _Backend(Protocol):
    """What the index needs from a database. Every method is one transaction."""

    def positions(self, topic: str) -> dict[int, int]: ...
    def store(self, batch: Batch) -> Stored: ...
    def records_with(self, column: str, values: Sequence[str]) -> list[AuditRecord]: ...
    def counts(self) -> dict[str, int]: ...
    def close(self) -> None: ...


_SELECT = ("SELECT seq, region, message_id, correlation_id, stage, at, envelope_sha256, detail, prev_hash, hash "
           "FROM audit_records")

_RECORD_KEYS = ("seq", "region", "message_id", "correlation_id", "stage", "at", "envelope_sha256", "detail",
                "prev_hash", "hash")


# One schema, two dialects: SQLite integers are 64-bit already, PostgreSQL needs BIGINT; detail is JSONB there.
_SCHEMA_TEMPLATE = """
    CREATE TABLE IF NOT EXISTS audit_records (
        region TEXT NOT NULL, seq {bigint} NOT NULL, message_id TEXT NOT NULL, correlation_id TEXT NOT NULL,
        stage TEXT NOT NULL, at TEXT NOT NULL, envelope_sha256 TEXT, detail {json} NOT NULL, ref_id TEXT,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL, topic_partition INTEGER NOT NULL,
        topic_offset {bigint} NOT NULL,
        PRIMARY KEY (region, seq));
    CREATE INDEX IF NOT EXISTS audit_records_message_id ON audit_records (message_id);
    CREATE INDEX IF NOT EXISTS audit_records_correlation_id ON audit_records (correlation_id);
    CREATE INDEX IF NOT EXISTS audit_records_ref_id ON audit_records (ref_id);
    CREATE TABLE IF NOT EXISTS audit_segments (
        region TEXT NOT NULL, seq {bigint} NOT NULL, hash TEXT NOT NULL, jws TEXT NOT NULL,
        records INTEGER NOT NULL, topic_partition INTEGER NOT NULL, topic_offset {bigint} NOT NULL,
        PRIMARY KEY (region, seq));
    CREATE TABLE IF NOT EXISTS audit_conflicts (
        region TEXT NOT NULL, seq {bigint} NOT NULL, hash TEXT NOT NULL, topic_partition INTEGER NOT NULL,
        topic_offset {bigint} NOT NULL,
        PRIMARY KEY (region, seq, hash));
    CREATE TABLE IF NOT EXISTS audit_positions (
        topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset {bigint} NOT NULL,
        PRIMARY KEY (topic, partition));
"""


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
        with self._tx():
            for statement in self._SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

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
        rows = _record_rows(batch, lambda d: orjson.dumps(d).decode())
        with self._tx() as db:
            new = db.executemany(
                "INSERT INTO audit_records (region, seq, message_id, correlation_id, stage, at, envelope_sha256, "
                "detail, ref_id, prev_hash, hash, topic_partition, topic_offset) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (region, seq) DO NOTHING", rows,
            ).rowcount
            conflicts = 0
            if new < len(rows):  # some were known: the same record read again, or a different one (a fork)
                conflicts = db.executemany(
                    "INSERT INTO audit_conflicts (region, seq, hash, topic_partition, topic_offset) "
                    "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM audit_records "
                    "WHERE region = ? AND seq = ? AND hash <> ?) ON CONFLICT DO NOTHING", _conflict_rows(rows),
                ).rowcount
            db.executemany(
                "INSERT INTO audit_segments (region, seq, hash, jws, records, topic_partition, topic_offset) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", _segment_rows(batch),
            )
            db.executemany(  # last, in the same transaction: the position never runs ahead of the records
                "INSERT INTO audit_positions (topic, partition, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                [(batch.topic, p, o) for p, o in batch.positions.items()],
            )
        return Stored(new, conflicts)

    def records_with(self, column: str, values: Sequence[str]) -> list[AuditRecord]:
        assert column in _COLUMNS, column
        out: list[AuditRecord] = []
        for i in range(0, len(values), _IN_CHUNK):
            chunk = values[i:i + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(f"{_SELECT} WHERE {column} IN ({marks})", chunk)  # noqa: S608 (fixed names)
            for row in rows:
                record = dict(zip(_RECORD_KEYS, row, strict=True))
                record["detail"] = orjson.loads(record["detail"])
                out.append(record)
        return out

    def counts(self) -> dict[str, int]:
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM audit_records), (SELECT count(*) FROM audit_segments), "
            "(SELECT count(*) FROM audit_conflicts)"
        ).fetchone()
        return {"records": row[0], "segments": row[1], "conflicts": row[2]}

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
            for statement in self._SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def positions(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT partition, next_offset FROM audit_positions WHERE topic = %s", (topic,))
        return {int(p): int(o) for p, o in rows.fetchall()}

    def store(self, batch: Batch) -> Stored:
        from psycopg.types.json import Jsonb

        rows = _record_rows(batch, Jsonb)
        with self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit_records (region, seq, message_id, correlation_id, stage, at, envelope_sha256, "
                "detail, ref_id, prev_hash, hash, topic_partition, topic_offset) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (region, seq) DO NOTHING",
                rows,
            )
            new = max(cur.rowcount, 0)
            conflicts = 0
            if new < len(rows):
                cur.executemany(
                    "INSERT INTO audit_conflicts (region, seq, hash, topic_partition, topic_offset) "
                    "SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM audit_records "
                    "WHERE region = %s AND seq = %s AND hash <> %s) ON CONFLICT DO NOTHING", _conflict_rows(rows),
                )
                conflicts = max(cur.rowcount, 0)
            cur.executemany(
                "INSERT INTO audit_segments (region, seq, hash, jws, records, topic_partition, topic_offset) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", _segment_rows(batch),
            )
            cur.executemany(
                "INSERT INTO audit_positions (topic, partition, next_offset) VALUES (%s, %s, %s) "
                "ON CONFLICT (topic, partition) DO UPDATE "
                "SET next_offset = GREATEST(audit_positions.next_offset, excluded.next_offset)",
                [(batch.topic, p, o) for p, o in batch.positions.items()],
            )
        return Stored(new, conflicts)

    def records_with(self, column: str, values: Sequence[str]) -> list[AuditRecord]:
        assert column in _COLUMNS, column
        if not values:
            return []
        rows = self._db.execute(f"{_SELECT} WHERE {column} = ANY(%s)", (list(values),))  # noqa: S608 (fixed names)
        return [dict(zip(_RECORD_KEYS, row, strict=True)) for row in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM audit_records), (SELECT count(*) FROM audit_segments), "
            "(SELECT count(*) FROM audit_conflicts)"
        ).fetchone()
        assert row is not None
        return {"records": int(row[0]), "segments": int(row[1]), "conflicts": int(row[2])}

    def close(self) -> None:
        self._db.close()


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
        wanted = sorted(v for v in set(values) if v)
        if not wanted:
            return []
        with self._lock:
            return self._backend.records_with(column, wanted)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._backend.counts()

    def close(self) -> None:
        with self._lock:
            self._backend.close()


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
    read: int = 0  # audit records read from the topic
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
    topic: str | None = None,
    follow: asyncio.Event | None = None,
    timeout_s: float | None = None,
    setup_timeout_s: float = 30.0,
) -> IndexRun:
    """Index `topic` (default: the `yrdx.audit` of the namespace of `kafka`) from the stored position: up to its
    end as seen at the start, or, with `follow`, until that event is set. `timeout_s` bounds the whole catch-up:
    what was fetched by then is stored, and the rest waits for the next call. Raises TimeoutError when the broker
    cannot be reached within the setup time."""
    cfg = KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka
    topic = topic or cfg.topics.audit
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s

    def setup_s() -> float:  # each step of the set-up, within what is left of the whole
        return setup_timeout_s if deadline is None else max(0.0, min(setup_timeout_s, deadline - loop.time()))

    run = IndexRun(topic)
    while True:
        async with asyncio.timeout(setup_s()):
            partitions = await _partitions(cfg, topic)
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
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(
        **client_options(cfg), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=cfg.fetch_max_wait_ms,
    )
    try:
        async with asyncio.timeout(setup_s()):
            await consumer.start()
            consumer.assign(tps)
            stored = await asyncio.to_thread(index.positions, topic)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            for tp in tps:
                at = stored.get(tp.partition)
                if at is not None and at > ends[tp]:
                    log.warning("stored position is past the end of the topic (was it recreated?); reading it "
                                "from the beginning", extra={"partition": tp.partition, "stored": at})
                    at = None
                if at is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, at)
                    run.resumed[tp.partition] = at
                run.positions[tp.partition] = await consumer.position(tp)
        remaining = set(tps) if follow else {tp for tp in tps if run.positions[tp.partition] < ends[tp]}
        while remaining and not (follow and follow.is_set()):
            wait_ms = 500 if follow else 200
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    break
                wait_ms = max(1, min(wait_ms, int(left * 1000)))
            fetched = await consumer.getmany(*remaining, timeout_ms=wait_ms)
            messages = [m for batch in fetched.values() for m in batch]
            if messages:
                segments, skipped = decode_segments((m.partition, m.offset, m.value) for m in messages)
                positions = {tp.partition: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
                stored_batch = Batch(topic, segments, positions, skipped)
                result = await asyncio.to_thread(index.store, stored_batch)
                run.read += sum(len(s.records) for _, s in segments)
                run.segments += len(segments)
                run.skipped += skipped
                run.new += result.new
                run.conflicts += result.conflicts
                run.positions.update(positions)
            if not follow:
                remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return run


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


def trace(index: AuditIndex, message_id: str) -> list[AuditRecord]:
    """The records of the message, of its conversation and of the receipts about them, in time order
    (at, region, seq). Empty when no record names the id."""
    found: dict[tuple[str, int], AuditRecord] = {}

    def add(records: Iterable[AuditRecord]) -> None:
        for r in records:
            found[(r["region"], r["seq"])] = r

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
    return journey(list(found.values()))


def trace_document(index: AuditIndex, message_id: str) -> dict[str, Any] | None:
    """The JSON of `yrdx audit trace --json` and of GET /v1/audit/messages/{id}; None when nothing is known."""
    records = trace(index, message_id)
    if not records:
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
    }


def _short_id(value: str) -> str:
    return value[-12:]  # a UUIDv7 begins with its timestamp, so ids of one conversation differ at the end


def format_trace(doc: Mapping[str, Any]) -> str:
    """A readable table of a trace document: one line per record, in time order."""
    # The signer of the very envelope a row is about: a tampered copy that claims the id shows none.
    signers = {(r["message_id"], r["envelope_sha256"]): str(r["detail"]["signer"]) for r in doc["records"]
               if r["stage"] == "verified" and isinstance(r["detail"].get("signer"), str)}
    receipts = set(doc["receipt_ids"])
    head = [
        f"message {doc['message_id']}",
        f"conversation {', '.join(doc['correlation_ids']) or '-'}: {len(doc['message_ids'])} messages, "
        f"{len(receipts)} receipts, {len(doc['records'])} records in {', '.join(doc['regions'])}",
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
            r["at"], r["region"], str(r["seq"]), r["stage"],
            (_short_id(msg) + (" (receipt)" if msg in receipts else "")) if msg else "-",
            signers.get((msg, r["envelope_sha256"]), "-"), (r["envelope_sha256"] or "-")[:12], r["hash"][:12], detail,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    return "\n".join(head + [line.rstrip() for line in lines])


async def current_trace(
    kafka: KafkaConfig, target: str, message_id: str, update_timeout_s: float = 2.0
) -> dict[str, Any] | None:
    """For the gateway's HTTP route: bring the index up to date (bounded), then trace. A broker that cannot be
    reached in time leaves the index as it is: the answer is then what was indexed before."""
    index = await asyncio.to_thread(open_index, target)
    try:
        try:
            await update_index(kafka, index, timeout_s=update_timeout_s, setup_timeout_s=update_timeout_s)
        except (TimeoutError, KafkaError, OSError) as e:
            log.warning("audit index not updated; answering from what it holds", extra={"error": repr(e)})
        return await asyncio.to_thread(trace_document, index, message_id)
    finally:
        await asyncio.to_thread(index.close)


# --- yrdx audit index | trace -------------------------------------------------------------------------------


def _load(path: str) -> GatewayConfig | None:
    try:
        return load_config(Path(path))
    except ConfigError as e:
        print(f"yrdx: bad config {path}: {e}", file=sys.stderr)
        return None


def _target(args: argparse.Namespace) -> str:
    if args.dsn:
        return str(args.dsn)
    return str(Path(args.db).resolve() if args.db else default_index_path(Path(args.config)))


async def _index(cfg: GatewayConfig, index: AuditIndex, follow: bool) -> IndexRun:
    if not follow:
        return await update_index(cfg.kafka, index)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await update_index(cfg.kafka, index, follow=stop)


def _open(args: argparse.Namespace) -> AuditIndex | None:
    try:
        return open_index(_target(args))
    except IndexUnavailable as e:
        print(f"yrdx: {e}", file=sys.stderr)
        return None


def cmd_index(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    index = _open(args) if cfg is not None else None
    if cfg is None or index is None:
        return 2
    with index:
        audit_topic = cfg.topics.audit
        stored = index.positions(audit_topic)
        for p, offset in sorted(stored.items()):
            print(f"{audit_topic}[{p}]: resuming at offset {offset} ({index.where})", flush=True)
        if not stored:
            print(f"{audit_topic}: nothing indexed yet, reading from the beginning ({index.where})", flush=True)
        started = time.monotonic()
        try:
            run = asyncio.run(_index(cfg, index, args.follow))
        except (TimeoutError, KafkaError, OSError) as e:
            print(f"yrdx: cannot read {audit_topic} from {cfg.kafka.bootstrap_servers}: {e!r}", file=sys.stderr)
            return 1
        counts = index.counts()
    print(f"{run.summary()} in {time.monotonic() - started:.1f} s", flush=True)
    print(f"index: {counts['records']} records, {counts['segments']} segments, {counts['conflicts']} conflicts",
          flush=True)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    index = _open(args) if cfg is not None else None
    if cfg is None or index is None:
        return 2
    with index:
        if not args.no_update:
            try:
                asyncio.run(update_index(cfg.kafka, index))
            except (TimeoutError, KafkaError, OSError) as e:
                print(f"yrdx: index not updated ({e!r}); tracing what it holds", file=sys.stderr)
        doc = trace_document(index, args.message_id)
    if doc is None:
        print(f"yrdx: no audit record names {args.message_id}", file=sys.stderr)
        return 3
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() if args.json else format_trace(doc))
    return 0


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a gateway config: its Kafka settings are used")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--db", help="SQLite index file (default: var/audit-index.sqlite next to the config)")
    where.add_argument("--dsn", help="PostgreSQL instead of SQLite: postgresql://user@host:port/db")


def add_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    index = sub.add_parser("index", help="index yrdx.audit into SQLite or PostgreSQL, from where it stopped")
    _where(index)
    index.add_argument("--follow", action="store_true", help="keep indexing until SIGTERM or SIGINT")
    index.set_defaults(func=cmd_index)

    tr = sub.add_parser("trace", help="one message's conversation across regions, receipts included")
    tr.add_argument("message_id")
    _where(tr)
    tr.add_argument("--json", action="store_true", help="the JSON document (as GET /v1/audit/messages/{id})")
    tr.add_argument("--no-update", action="store_true", help="trace the index as it is, without catching up")
    tr.set_defaults(func=cmd_trace)
