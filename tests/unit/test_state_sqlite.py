"""What only the SQLite backend does (gateway/state/sqlite.py): a file written before the schema was versioned is
adopted as version 1 with its rows; a file locked past the busy timeout is StateUnavailable; and how a
StateStore is opened. Everything both backends do is tests/unit/test_state_contract.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway.state import StateStore, StateUnavailable, schema
from gateway.state.sqlite import SqliteBackend

# The schema the store created before it had a schema_version table (gateway/state.py until then).
UNVERSIONED = """
CREATE TABLE sent (id TEXT PRIMARY KEY, platform TEXT NOT NULL, type TEXT NOT NULL, to_region TEXT NOT NULL,
    correlation_id TEXT NOT NULL, envelope_sha256 TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE sent_events (id TEXT NOT NULL, at REAL NOT NULL, stage TEXT NOT NULL, detail TEXT);
CREATE INDEX sent_events_id ON sent_events(id);
CREATE TABLE idempotency (platform TEXT NOT NULL, key TEXT NOT NULL, request_sha256 TEXT NOT NULL,
    message_id TEXT NOT NULL, envelope BLOB NOT NULL, signature TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (platform, key));
CREATE TABLE seen (id TEXT PRIMARY KEY, outcome TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, platform TEXT NOT NULL, id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, from_region TEXT NOT NULL, envelope BLOB NOT NULL, signature TEXT NOT NULL,
    received_at REAL NOT NULL, leased_until REAL NOT NULL DEFAULT 0, acked_at REAL);
CREATE INDEX inbox_pending ON inbox(platform, acked_at, seq);
CREATE TABLE jti (jti TEXT PRIMARY KEY, exp REAL NOT NULL);
CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL);
INSERT INTO sent VALUES ('m1', 'p', 't', 'SH', 'c1', 'h', 'published', 1, 1);
INSERT INTO sent_events VALUES ('m1', 1, 'accepted', NULL);
INSERT INTO seen VALUES ('r1', 'delivered', 'yrdx.js.inbox:0:5', 1);
INSERT INTO inbox (platform, id, type, from_region, envelope, signature, received_at)
    VALUES ('p', 'x1', 't', 'JS', x'7b7d', 's', 1);
INSERT INTO jti VALUES ('p:j1', 9999999999);
INSERT INTO kv VALUES ('audit_head', CAST('{"seq": 7}' AS BLOB));
"""


def test_a_file_from_before_versioning_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(UNVERSIONED)
    store = StateStore(path)
    try:
        assert store.schema_version == schema.LATEST
        sent = store.sent("m1")
        assert sent is not None and sent.status == "published" and sent.history[0]["stage"] == "accepted"
        assert store.seen(["r1"])["r1"].source == "yrdx.js.inbox:0:5"
        assert [i.envelope for i in store.lease_inbox("p", 10)] == [b"{}"]
        assert store.use_jti("p:j1", time.time()) is False
        assert store.get("audit_head") == b'{"seq": 7}'
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
                (v,) for v in range(1, schema.LATEST + 1)]


def test_a_new_file_has_2_kib_pages_and_a_file_with_other_pages_keeps_them(tmp_path: Path) -> None:
    """The page size is chosen when a file is created (fewer bytes per changed page in the WAL); a file written
    with SQLite's default 4 KiB pages (by an earlier yrdx) is opened as it is, rows and all."""
    fresh = StateStore(tmp_path / "new.sqlite")
    try:
        assert fresh._b._db.execute("PRAGMA page_size").fetchone() == (2048,)  # type: ignore[attr-defined]
    finally:
        fresh.close()
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA page_size=4096")
        db.executescript(UNVERSIONED)
    store = StateStore(old)
    try:
        assert store._b._db.execute("PRAGMA page_size").fetchone() == (4096,)  # type: ignore[attr-defined]
        sent = store.sent("m1")
        assert sent is not None and sent.status == "published"
    finally:
        store.close()


def test_a_file_locked_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    backend = SqliteBackend(path, timeout_s=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file
        with pytest.raises(StateUnavailable, match="database is locked"):
            backend.mark_seen([])
        with pytest.raises(StateUnavailable):
            backend.use_jtis([("j", time.time())])
        assert backend.get("k") is None  # readers go on (WAL)
        other.execute("ROLLBACK")
        assert backend.use_jtis([("j", time.time())]) == [True]
    finally:
        other.close()
        backend.close()


def test_upkeep_does_not_raise_for_a_database_that_cannot_serve_it(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    store._b = SqliteBackend(path, timeout_s=0.1)  # the same file, with a short busy timeout
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert store.purge_jti() is False
        assert "used JWT ids not purged" in caplog.text
        other.execute("ROLLBACK")
        assert store.purge_jti() is True
    finally:
        other.close()
        store.close()


def test_a_store_is_a_sqlite_path_or_a_postgresql_dsn(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "nested" / "state.sqlite")  # the folder is made
    try:
        assert (store.backend, store.where, store.available) == ("sqlite", str(tmp_path / "nested" / "state.sqlite"),
                                                                True)
    finally:
        store.close()
    with pytest.raises(ValueError, match="exactly one"):
        StateStore()
    with pytest.raises(ValueError, match="exactly one"):
        StateStore(tmp_path / "s.sqlite", dsn="postgresql://localhost/x")
