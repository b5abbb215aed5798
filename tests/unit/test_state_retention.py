"""Retention of the state (gateway/state/retention.py, StateStore.sweep, gateway/state/sweeper.py): what a sweep
deletes and what it must keep, as both backends must behave, and the background loop.

`RetentionContract` is the suite; `TestSqlite` runs it on a SQLite file, tests/integration/
test_state_retention_postgres.py on PostgreSQL. A row is made old by moving its timestamp back (outside the store);
the sweep is then given the real time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.state.store as state_store
from gateway.config import Retention, StateRetention
from gateway.metrics import Metrics
from gateway.state import Decision, IdempotentRequest, StateStore, StateUnavailable
from gateway.state.retention import DAY_S, HOUR_S, SEEN_MARGIN_S, TABLES, RetentionPolicy
from gateway.state.sweeper import run_sweeper, sweep_once
from tests.unit.test_state_contract import Database, SqliteDatabase, inbox, reply, request_row, sent_row

POLICY = RetentionPolicy()  # the defaults: 30 days, acked inbox 24 h, Kafka 168 h + 168 h
MINUTE = 60.0


def age(db: Database, table: str, column: str, key: str, value: str, by_s: float) -> None:
    """Move one row's timestamp `by_s` seconds into the past."""
    db.sql(f"UPDATE {table} SET {column} = {column} - ? WHERE {key} = ?", (by_s, value))  # noqa: S608


def ids(db: Database, table: str, column: str = "id") -> set[str]:
    return {r[0] for r in db.sql(f"SELECT {column} FROM {table}")}  # noqa: S608


def idem(message_id: str) -> IdempotentRequest:
    return IdempotentRequest("sha-" + message_id, message_id, b'{"id": "%s"}' % message_id.encode(), "sig")


class RetentionContract:
    """StateStore.sweep. Subclasses provide the `db` fixture."""

    @pytest.fixture
    def store(self, db: Database) -> StateStore:
        return db.open()

    def test_acked_inbox_rows_past_their_hours_go_younger_and_pending_ones_stay(self, db: Database,
                                                                                 store: StateStore) -> None:
        store.deliver_to_inbox([inbox("old"), inbox("young"), inbox("pending")])
        assert store.ack_inbox("p1", ["old", "young"]) == 2
        age(db, "inbox", "acked_at", "id", "old", 24 * HOUR_S + MINUTE)
        age(db, "inbox", "acked_at", "id", "young", 24 * HOUR_S - MINUTE)
        deleted = store.sweep(time.time())
        assert deleted["inbox"] == 1
        assert ids(db, "inbox") == {"young", "pending"}
        assert [i.id for i in store.lease_inbox("p1", 10)] == ["pending"]

    def test_a_pending_inbox_row_is_never_deleted_however_old(self, db: Database, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("pending")])
        age(db, "inbox", "received_at", "id", "pending", 3650 * DAY_S)
        assert store.sweep(time.time() + 3650 * DAY_S)["inbox"] == 0
        assert store.inbox_depth() == 1 and [i.id for i in store.lease_inbox("p1", 10)] == ["pending"]

    def test_a_duplicate_is_still_refused_after_its_inbox_row_went(self, db: Database, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1")])
        store.ack_inbox("p1", ["m1"])
        age(db, "inbox", "acked_at", "id", "m1", 2 * DAY_S)
        assert store.sweep(time.time())["inbox"] == 1 and ids(db, "inbox") == set()
        # What egress reads before it delivers a copy: the mark outlives the row.
        assert store.seen(["m1"])["m1"].outcome == "delivered"

    def test_seen_marks_go_after_the_longest_a_copy_can_arrive(self, db: Database, store: StateStore) -> None:
        store.mark_seen([Decision("old", "delivered", "t:0:1"), Decision("young", "expired", "t:0:2")])
        age(db, "seen", "at", "id", "old", POLICY.seen_s + MINUTE)
        age(db, "seen", "at", "id", "young", POLICY.seen_s - MINUTE)
        assert store.sweep(time.time())["seen"] == 1
        assert set(store.seen(["old", "young"])) == {"young"}

    def test_seen_marks_outlive_a_shorter_days_by_the_kafka_retention_and_margin(self, db: Database,
                                                                                 store: StateStore) -> None:
        store.retention = RetentionPolicy(StateRetention(days=1), Retention(inbox_hours=168, dlq_hours=168))
        store.mark_seen([Decision("m1", "delivered", "t:0:1")])
        store.record_sent([sent_row("s1")], "accepted")
        kafka_and_margin = (168 + 168) * HOUR_S + SEEN_MARGIN_S
        deleted = store.sweep(time.time() + kafka_and_margin - MINUTE)
        assert (deleted["sent"], deleted["seen"]) == (1, 0)  # days=1 applies to the sent row, not to the mark
        assert store.seen(["m1"])["m1"].outcome == "delivered"
        assert store.sweep(time.time() + DAY_S + kafka_and_margin + MINUTE)["seen"] == 1

    def test_sent_rows_go_with_their_history_younger_ones_stay_whole(self, db: Database, store: StateStore) -> None:
        store.record_sent([sent_row("old"), sent_row("young")], "accepted")
        store.record_sent([sent_row("old"), sent_row("young")], "published")
        age(db, "sent", "created_at", "id", "old", 30 * DAY_S + MINUTE)
        age(db, "sent", "created_at", "id", "young", 30 * DAY_S - MINUTE)
        deleted = store.sweep(time.time())
        assert (deleted["sent"], deleted["sent_events"]) == (1, 2)
        assert store.sent("old") is None and ids(db, "sent_events") == {"young"}
        young = store.sent("young")
        assert young is not None and [h["stage"] for h in young.history] == ["accepted", "published"]

    def test_idempotency_keys_go_after_days_and_hold_their_message_until_then(self, db: Database,
                                                                               store: StateStore) -> None:
        store.remember_idempotent("p1", "old", idem("m-old"))
        store.remember_idempotent("p1", "young", idem("m-young"))
        age(db, "idempotency", "created_at", "key", "old", 30 * DAY_S + MINUTE)
        age(db, "idempotency", "created_at", "key", "young", 30 * DAY_S - MINUTE)
        assert store.sweep(time.time())["idempotency"] == 1
        assert store.idempotent("p1", "old") is None  # a retry now is a new request
        # Within the window a retry still gets the message first built for the key, not its own.
        assert store.remember_idempotent("p1", "young", idem("m-retry")).message_id == "m-young"

    def test_settled_requests_go_waiting_ones_and_owed_compensations_stay(self, db: Database,
                                                                           store: StateStore) -> None:
        for c in ("replied", "compensated", "timed_out", "owed", "pending", "young"):
            payload = None if c == "timed_out" else '{"omsgid": "x"}'
            store.open_request(request_row(c, compensation=None if c == "timed_out" else "medical.reversal",
                                           message_id=f"m-{c}", payload=payload))
        store.settle_request("replied", reply("r1"), time.time())
        store.settle_request("young", reply("r2"), time.time())
        for c in ("compensated", "timed_out", "owed"):
            store.settle_request(c, None, time.time())
        store.record_compensation("compensated", "m-reversal")
        for c in ("replied", "compensated", "timed_out", "owed", "pending"):
            age(db, "requests", "deadline_at", "correlation_id", c, 30 * DAY_S + 2 * MINUTE)
        age(db, "requests", "deadline_at", "correlation_id", "young", 30 * DAY_S - 2 * MINUTE)
        assert store.sweep(time.time())["requests"] == 3
        assert ids(db, "requests", "correlation_id") == {"owed", "pending", "young"}
        # What the request sweeper still acts on is all there.
        assert {r.correlation_id for r in store.overdue_requests(time.time(), time.time(), 10)} == {"pending", "owed"}

    def test_a_settled_request_is_kept_while_a_late_result_can_arrive(self, db: Database, store: StateStore) -> None:
        store.retention = RetentionPolicy(StateRetention(days=1))
        store.open_request(request_row("c1", message_id="m-c1", payload='{"omsgid": "x"}'))
        store.settle_request("c1", None, time.time())
        store.record_compensation("c1", "m-reversal")  # a late result for it must be withheld: its row says so
        assert store.sweep(time.time() + POLICY.copies_s - 2 * MINUTE)["requests"] == 0
        assert store.sweep(time.time() + POLICY.copies_s + 2 * MINUTE)["requests"] == 1

    def test_a_sweep_deletes_in_chunks_and_counts_every_table(self, db: Database, store: StateStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(state_store, "SWEEP_CHUNK", 3)
        store.mark_seen([Decision(f"m{i}", "delivered", f"t:0:{i}") for i in range(10)])
        deleted = store.sweep(time.time() + POLICY.seen_s + MINUTE)
        assert deleted == {**dict.fromkeys(TABLES, 0), "seen": 10}
        assert ids(db, "seen") == set()

    def test_two_sweeps_at_once_delete_each_row_once(self, db: Database, store: StateStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(state_store, "SWEEP_CHUNK", 50)
        other = db.open()
        store.mark_seen([Decision(f"m{i}", "delivered", f"t:0:{i}") for i in range(1000)])
        later = time.time() + POLICY.seen_s + MINUTE
        counts: list[int] = []
        errors: list[Exception] = []

        def sweep(s: StateStore) -> None:
            for _ in range(20):  # retried as the loop would: a lock wait past the timeout is StateUnavailable
                try:
                    counts.append(s.sweep(later)["seen"])
                    return
                except StateUnavailable as e:
                    errors.append(e)

        threads = [threading.Thread(target=sweep, args=(s,)) for s in (store, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(counts) == 2 and sum(counts) == 1000 and ids(db, "seen") == set()


class TestSqlite(RetentionContract):
    @pytest.fixture
    def db(self, tmp_path: Path) -> Iterator[Database]:
        d = SqliteDatabase(tmp_path / "state.sqlite")
        yield d
        d.close()


# --- the policy ------------------------------------------------------------------------------------------------

def test_the_policy_derives_the_dedupe_window_from_kafka_and_days() -> None:
    policy = RetentionPolicy(StateRetention(days=2, acked_inbox_hours=6), Retention(inbox_hours=24, dlq_hours=48))
    now = 1_000_000_000.0
    assert policy.cutoffs(now) == {
        "idempotency": now - 2 * DAY_S, "sent": now - 2 * DAY_S,
        "requests": now - (72 * HOUR_S + SEEN_MARGIN_S),  # longer than days: late results still arrive
        "inbox": now - 6 * HOUR_S,
        "seen": now - (2 * DAY_S + 72 * HOUR_S + SEEN_MARGIN_S),  # a retry's copy, waiting on Kafka
    }


# --- the loop in the background --------------------------------------------------------------------------------

async def test_the_loop_survives_a_failing_sweep_and_sweeps_the_next_round(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    store.mark_seen([Decision("m-secret-id", "delivered", "t:0:1"), Decision("m2", "delivered", "t:0:2")])
    metrics = Metrics("SH")
    real = store.sweep
    calls: list[str] = []

    def sweep(now: float) -> dict[str, int]:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real(now + POLICY.seen_s + MINUTE)

    store.sweep = sweep  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="gateway.state.sweeper")
    task = asyncio.create_task(run_sweeper(store, 0.01, metrics))
    try:
        for _ in range(500):
            if metrics.registry.get_sample_value("yrdx_state_swept_total", {"table": "seen"}):
                break
            await asyncio.sleep(0.01)
        assert not task.done()
    finally:
        task.cancel()
        store.close()
    assert metrics.registry.get_sample_value("yrdx_state_sweep_failures_total") == 1
    assert metrics.registry.get_sample_value("yrdx_state_swept_total", {"table": "seen"}) == 2
    assert threading.main_thread().name not in calls  # in a worker thread: the event loop went on
    mine = [r for r in caplog.records if r.name == "gateway.state.sweeper"]  # other loggers may be at INFO too
    failed = [r for r in mine if r.levelno == logging.ERROR]
    swept = [r for r in mine if r.levelno == logging.INFO]
    assert "disk on fire" in failed[0].error  # type: ignore[attr-defined]
    assert swept[0].deleted == {"seen": 2}  # type: ignore[attr-defined]  # counts per table, never ids
    assert "m-secret-id" not in caplog.text


async def test_a_sweep_that_deleted_nothing_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    caplog.set_level(logging.INFO, logger="gateway.state.sweeper")
    try:
        assert await sweep_once(store, Metrics("SH")) == {}
    finally:
        store.close()
    assert [r for r in caplog.records if r.name == "gateway.state.sweeper"] == []
