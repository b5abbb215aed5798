"""The state store's contract (gateway/state/store.py): every method, as both backends must behave.

`StateContract` is the one suite. `TestSqlite` below runs it on a SQLite file in tmp_path;
tests/integration/test_state_postgres.py runs the same class on a PostgreSQL database of its own
(`TestPostgres`, through the `postgres_db` fixture). A backend provides a `db` fixture: a `Database` that opens
stores on one database and reaches it outside the store (to look, and to make a statement fail).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import psycopg
import pytest

import gateway.state.store as state_store
from gateway.state import (
    Decision,
    IdempotentRequest,
    InboxDelivery,
    NewRequest,
    NewSent,
    Opened,
    ReceiptItem,
    Reply,
    StateSchemaError,
    StateStore,
    schema,
)

DB_ERRORS = (sqlite3.Error, psycopg.Error)  # what an injected failure raises (not StateUnavailable: not an outage)
SHA = "a" * 64
OTHER_SHA = "b" * 64


class Database:
    """One database under test: `open()` a store on it (each call a new connection), `sql()` outside the store
    (written with ? placeholders), `fail_inserts(table, id)` makes every insert of that id into that table fail."""

    backend: ClassVar[str]

    def __init__(self) -> None:
        self.stores: list[StateStore] = []

    def open(self) -> StateStore:
        store = self._open()
        self.stores.append(store)
        return store

    def _open(self) -> StateStore:
        raise NotImplementedError

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def fail_inserts(self, table: str, row_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for s in self.stores:
            s.close()


class SqliteDatabase(Database):
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _open(self) -> StateStore:
        return StateStore(self.path)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path, isolation_level=None) as db:
            return list(db.execute(statement, params))

    def fail_inserts(self, table: str, row_id: str) -> None:
        self.sql(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} WHEN NEW.id = '{row_id}' "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


def inbox(i: str, platform: str = "p1", source: str | None = None) -> InboxDelivery:
    return InboxDelivery(platform, i, "medical.filing.request", "JS", b'{"id": "%s"}' % i.encode(), f"sig-{i}",
                         source or f"yrdx.sh.inbox:0:{i}")


def request_row(c: str, platform: str = "sh-platform", deadline_in: float = 60.0, key: str | None = None,
                compensation: str | None = "medical.reversal", message_id: str | None = None,
                payload: str | None = None) -> NewRequest:
    now = time.time()
    return NewRequest(c, platform, "medical.settlement.request", "JS", "medical.settlement.result", now + deadline_in,
                      key, compensation, now, message_id, payload)


def key_claim(message_id: str, sha: str = SHA) -> IdempotentRequest:
    return IdempotentRequest(sha, message_id, b'{"id": "%s"}' % message_id.encode(), f"sig-{message_id}")


def reply(i: str) -> Reply:
    return Reply(i, "medical.settlement.result", "JS", b'{"id": "%s"}' % i.encode(), f"sig-{i}")


def sent_row(i: str, to: str = "SH") -> NewSent:
    return NewSent(i, "js-platform", "medical.filing.request", to, f"corr-{i}", SHA)


class StateContract:
    """Every method of StateStore. Subclasses provide the `db` fixture."""

    @pytest.fixture
    def store(self, db: Database) -> StateStore:
        return db.open()

    # --- what this gateway sent ---------------------------------------------------------------------------

    def test_a_sent_message_has_its_fields_status_and_history_in_order(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1"), sent_row("m2", to="ZJ")], "accepted")
        store.record_sent([sent_row("m1")], "published", "topic yrdx.sh.inbox")
        m = store.sent("m1")
        assert m is not None
        assert (m.id, m.platform, m.type, m.to_region, m.correlation_id, m.envelope_sha256, m.status) == (
            "m1", "js-platform", "medical.filing.request", "SH", "corr-m1", SHA, "published")
        assert [h["stage"] for h in m.history] == ["accepted", "published"]
        assert m.history[1]["detail"] == "topic yrdx.sh.inbox"  # a detail that is not JSON stays a string
        assert "detail" not in m.history[0] and m.history[0]["at"] <= m.history[1]["at"]
        m2 = store.sent("m2")
        assert m2 is not None and m2.to_region == "ZJ" and m2.status == "accepted"

    def test_the_status_only_moves_forward(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1")], "accepted")
        store.record_sent([sent_row("m1")], "publish_failed")
        store.record_sent([sent_row("m1")], "published")
        store.record_sent([sent_row("m1")], "accepted")  # a late retry's record does not undo 'published'
        m = store.sent("m1")
        assert m is not None and m.status == "published"
        assert [h["stage"] for h in m.history] == ["accepted", "publish_failed", "published", "accepted"]

    def test_a_receipt_that_overtook_published_stays(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1")], "accepted")
        store.apply_receipts("SH", [ReceiptItem("m1", SHA, "delivered", {"by": "SH"})],
                             Decision("r1", "delivered", "yrdx.js.inbox:0:1"))
        store.record_sent([sent_row("m1")], "published")
        m = store.sent("m1")
        assert m is not None and m.status == "delivered"

    def test_an_unknown_or_unstorable_id_is_no_message(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1")], "accepted")
        assert store.sent("nope") is None
        assert store.sent("m1\x00") is None  # a URL's %00: unknown, not an error
        assert store.sent("\ud800") is None  # a lone surrogate cannot be stored either

    def test_receipts_count_only_for_what_was_sent_to_that_peer_with_that_hash(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1"), sent_row("m2"), sent_row("m3", to="ZJ")], "published")
        detail = {"receipt_id": "r1", "outcome": "delivered", "at": "2026-01-01T00:00:00Z"}
        applied = store.apply_receipts("SH", [
            ReceiptItem("m1", SHA, "delivered", detail),
            ReceiptItem("m2", OTHER_SHA, "delivered", detail),  # another hash
            ReceiptItem("m3", SHA, "delivered", detail),  # sent to ZJ, not SH
            ReceiptItem("m4", SHA, "delivered", detail),  # never sent
            ReceiptItem("m\x00", SHA, "delivered", detail),  # cannot even be stored
        ], Decision("r1", "delivered", "yrdx.js.inbox:1:7"))
        assert applied == [("delivered", "corr-m1"), ("unmatched", ""), ("unmatched", ""), ("unmatched", ""),
                           ("unmatched", "")]
        m1, m2, m3 = store.sent("m1"), store.sent("m2"), store.sent("m3")
        assert m1 is not None and m1.status == "delivered" and m1.history[-1]["detail"] == detail
        assert m2 is not None and m2.status == "published" and len(m2.history) == 1
        assert m3 is not None and m3.status == "published"
        assert store.seen(["r1"]) == {"r1": Decision("r1", "delivered", "yrdx.js.inbox:1:7")}

    def test_a_rejected_message_becomes_delivered_by_a_later_receipt(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1")], "published")
        store.apply_receipts("SH", [ReceiptItem("m1", SHA, "rejected", {"reason": "delivery_failed"})],
                             Decision("r1", "delivered", "yrdx.js.inbox:0:1"))
        applied = store.apply_receipts("SH", [ReceiptItem("m1", SHA, "delivered", {"replayed": True})],
                                       Decision("r2", "delivered", "yrdx.js.inbox:0:2"))
        m = store.sent("m1")
        assert applied == [("delivered", "corr-m1")]
        assert m is not None and m.status == "delivered"
        assert [h["stage"] for h in m.history] == ["published", "rejected", "delivered"]

    def test_a_receipt_read_again_keeps_its_first_mark(self, store: StateStore) -> None:
        store.record_sent([sent_row("m1")], "published")
        item = ReceiptItem("m1", SHA, "delivered", {})
        store.apply_receipts("SH", [item], Decision("r1", "delivered", "yrdx.js.inbox:0:1"))
        store.apply_receipts("SH", [item], Decision("r1", "delivered", "yrdx.js.inbox:0:9"))
        assert store.seen(["r1"])["r1"].source == "yrdx.js.inbox:0:1"

    def test_applying_a_receipt_is_one_transaction(self, db: Database, store: StateStore) -> None:
        store.record_sent([sent_row("m1")], "published")
        db.fail_inserts("seen", "r1")
        with pytest.raises(DB_ERRORS):
            store.apply_receipts("SH", [ReceiptItem("m1", SHA, "delivered", {})],
                                 Decision("r1", "delivered", "yrdx.js.inbox:0:1"))
        m = store.sent("m1")
        assert m is not None and m.status == "published" and len(m.history) == 1
        assert store.seen(["r1"]) == {}

    # --- idempotency keys -----------------------------------------------------------------------------------

    def test_the_first_request_remembered_holds_the_key(self, store: StateStore) -> None:
        assert store.idempotent("js-platform", "k1") is None
        first = IdempotentRequest("h1", "m1", b"\x00\xffenvelope", "sig1")
        assert store.remember_idempotent("js-platform", "k1", first) == first
        second = IdempotentRequest("h2", "m2", b"other", "sig2")
        assert store.remember_idempotent("js-platform", "k1", second) == first  # the winner, not the loser
        assert store.idempotent("js-platform", "k1") == first
        assert store.idempotent("js-platform", "k1\x00") is None

    def test_keys_belong_to_their_platform(self, store: StateStore) -> None:
        a = IdempotentRequest("h1", "m1", b"a", "s1")
        b = IdempotentRequest("h2", "m2", b"b", "s2")
        assert store.remember_idempotent("p1", "k", a) == a
        assert store.remember_idempotent("p2", "k", b) == b
        assert store.idempotent("p1", "k") == a and store.idempotent("p2", "k") == b

    # --- dedupe marks -----------------------------------------------------------------------------------------

    def test_seen_answers_the_decided_ids_only(self, store: StateStore) -> None:
        assert store.seen([]) == {}
        store.mark_seen([Decision("a", "delivered", "t:0:1"), Decision("b", "bad_signature", "t:0:2")])
        assert store.seen(["a", "b", "c", "a\x00", "\udfff"]) == {
            "a": Decision("a", "delivered", "t:0:1"), "b": Decision("b", "bad_signature", "t:0:2")}

    def test_seen_takes_many_ids_at_once(self, store: StateStore) -> None:
        store.mark_seen([Decision(f"id-{i}", "delivered", f"t:0:{i}") for i in range(1200)])
        found = store.seen([f"id-{i}" for i in range(0, 1300)])
        assert len(found) == 1200 and found["id-1199"].source == "t:0:1199"

    def test_a_delivered_id_stays_delivered_a_rejected_one_may_be_decided_again(self, store: StateStore) -> None:
        store.mark_seen([Decision("a", "delivered", "t:0:1"), Decision("b", "delivery_failed", "t:0:2")])
        store.mark_seen([Decision("a", "duplicate", "t:0:3"), Decision("b", "delivered", "dlq-replay:0:4")])
        assert store.seen(["a", "b"]) == {"a": Decision("a", "delivered", "t:0:1"),
                                          "b": Decision("b", "delivered", "dlq-replay:0:4")}

    def test_marks_of_one_call_commit_together(self, db: Database, store: StateStore) -> None:
        db.fail_inserts("seen", "b")
        with pytest.raises(DB_ERRORS):
            store.mark_seen([Decision("a", "delivered", "t:0:1"), Decision("b", "delivered", "t:0:2"),
                             Decision("c", "delivered", "t:0:3")])
        assert store.seen(["a", "b", "c"]) == {}

    # --- the pull inbox -------------------------------------------------------------------------------------

    def test_an_inbox_delivery_is_queued_and_marked_delivered(self, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1"), inbox("m2")])
        assert store.seen(["m1", "m2"]) == {"m1": Decision("m1", "delivered", "yrdx.sh.inbox:0:m1"),
                                            "m2": Decision("m2", "delivered", "yrdx.sh.inbox:0:m2")}
        items = store.lease_inbox("p1", 10)
        assert [(i.id, i.type, i.from_region, i.envelope, i.signature) for i in items] == [
            ("m1", "medical.filing.request", "JS", b'{"id": "m1"}', "sig-m1"),
            ("m2", "medical.filing.request", "JS", b'{"id": "m2"}', "sig-m2"),
        ]
        assert items[0].seq < items[1].seq

    def test_a_message_is_queued_once(self, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1")])
        store.deliver_to_inbox([inbox("m1", source="yrdx.sh.inbox:3:99")])  # a second copy, or a re-read
        assert [i.id for i in store.lease_inbox("p1", 10)] == ["m1"]
        assert store.inbox_depth() == 1
        assert store.seen(["m1"])["m1"].source == "yrdx.sh.inbox:0:m1"  # delivered stays as first decided

    @pytest.mark.parametrize("failing", ["seen", "inbox"])
    def test_the_inbox_row_and_its_dedupe_mark_commit_together(self, db: Database, store: StateStore,
                                                               failing: str) -> None:
        db.fail_inserts(failing, "m2")
        with pytest.raises(DB_ERRORS):
            store.deliver_to_inbox([inbox("m1"), inbox("m2")])
        assert store.seen(["m1", "m2"]) == {}
        assert store.lease_inbox("p1", 10) == [] and store.inbox_depth() == 0

    def test_a_lease_takes_the_oldest_first_up_to_the_limit_of_one_platform(self, store: StateStore) -> None:
        store.deliver_to_inbox([inbox(f"m{i}") for i in range(5)])
        store.deliver_to_inbox([inbox("x1", platform="p2")])
        assert [i.id for i in store.lease_inbox("p1", 3)] == ["m0", "m1", "m2"]
        assert [i.id for i in store.lease_inbox("p1", 3)] == ["m3", "m4"]  # the first three are leased
        assert store.lease_inbox("p1", 3) == []
        assert [i.id for i in store.lease_inbox("p2", 3)] == ["x1"]
        assert store.lease_inbox("nobody", 3) == []

    def test_a_lapsed_lease_hands_the_message_out_again(self, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1")])
        assert [i.id for i in store.lease_inbox("p1", 10, lease_s=0.3)] == ["m1"]
        assert store.lease_inbox("p1", 10) == []
        time.sleep(0.5)
        assert [i.id for i in store.lease_inbox("p1", 10, lease_s=0.0)] == ["m1"]
        time.sleep(0.01)
        assert [i.id for i in store.lease_inbox("p1", 10)] == ["m1"]  # a lease of 0 s ends at once

    def test_an_acked_message_is_never_leased_again(self, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1"), inbox("m2")])
        store.lease_inbox("p1", 10, lease_s=0.0)
        assert store.ack_inbox("p1", ["m1"]) == 1
        time.sleep(0.01)
        assert [i.id for i in store.lease_inbox("p1", 10)] == ["m2"]

    def test_an_ack_counts_what_it_acked(self, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1"), inbox("m2"), inbox("x1", platform="p2")])
        assert store.ack_inbox("p1", []) == 0
        assert store.ack_inbox("p1", ["m1", "m1", "x1", "nope", "m\x00", "\ud800"]) == 1  # x1 is p2's
        assert store.ack_inbox("p1", ["m1", "m2"]) == 1  # m1 was acked already; unleased m2 may be acked
        assert store.ack_inbox("p2", ["x1"]) == 1

    def test_a_full_pull_is_leased_in_order_and_acked_in_one_call(self, store: StateStore) -> None:
        ids = [f"m{i:04d}" for i in range(1000)]  # MAX_PULL: more than one IN list of SQLite's
        store.deliver_to_inbox([inbox(i) for i in ids])
        items = store.lease_inbox("p1", 1000)
        assert [i.id for i in items] == ids and [i.seq for i in items] == sorted(i.seq for i in items)
        assert store.ack_inbox("p1", ids[::-1] + ids[:10]) == 1000
        assert store.inbox_depth() == 0

    def test_the_inbox_depth_counts_what_is_not_acked(self, store: StateStore) -> None:
        assert store.inbox_depth() == 0
        store.deliver_to_inbox([inbox("m1"), inbox("m2"), inbox("x1", platform="p2")])
        store.lease_inbox("p1", 1)
        assert store.inbox_depth() == 3
        store.ack_inbox("p1", ["m1"])
        assert store.inbox_depth() == 2

    # --- single-use JWT ids ---------------------------------------------------------------------------------

    def test_a_jti_is_used_once(self, store: StateStore) -> None:
        exp = time.time() + 300
        assert store.use_jti("p1:j1", exp) is True
        assert store.use_jti("p1:j1", exp) is False
        assert store.use_jti("p2:j1", exp) is True

    def test_jtis_of_a_group_are_used_once_in_one_call(self, store: StateStore) -> None:
        exp = time.time() + 300
        assert store.use_jti("p1:before", exp) is True
        assert store.use_jtis([("p1:a", exp), ("p1:before", exp), ("p1:b", exp), ("p1:a", exp)]) == [
            True, False, True, False]
        assert store.use_jtis([]) == []
        assert store.use_jti("p1:b", exp) is False

    def test_purging_forgets_only_long_expired_jtis(self, store: StateStore) -> None:
        store.use_jti("old", time.time() - 3600)
        store.use_jti("recent", time.time() - 10)  # expired, but within the minute of grace
        store.use_jti("live", time.time() + 300)
        assert store.purge_jti() is True
        assert store.use_jti("old", time.time() + 300) is True  # forgotten (its token's exp refuses it anyway)
        assert store.use_jti("recent", time.time() + 300) is False
        assert store.use_jti("live", time.time() + 300) is False

    def test_purges_are_paced(self, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """A purge scans the whole table: one soon after another does nothing, the next one due purges."""
        assert store.purge_jti() is True
        store.use_jti("old", time.time() - 3600)
        assert store.purge_jti() is True
        assert store.use_jti("old", time.time() + 300) is False  # kept: that purge was not due
        monkeypatch.setattr(state_store, "JTI_PURGE_EVERY_S", 0.0)
        assert store.purge_jti() is True
        assert store.use_jti("old", time.time() + 300) is True  # forgotten by the purge that was due

    # --- named values -----------------------------------------------------------------------------------------

    def test_a_named_value_is_kept_and_replaced(self, store: StateStore) -> None:
        assert store.get("audit_head") is None
        store.put("audit_head", orjson.dumps({"seq": 1, "hash": "x"}))
        store.put("other", b"\x00\x01\xff")
        store.put("audit_head", b'{"seq": 2}')
        assert store.get("audit_head") == b'{"seq": 2}' and store.get("other") == b"\x00\x01\xff"

    # --- request-reply ----------------------------------------------------------------------------------------

    def test_a_request_claims_its_correlation_id_once(self, store: StateStore) -> None:
        first = store.open_request(request_row("c1", key="k1", message_id="m1", payload='{"omsgid": "m1"}'))
        assert first.ours and first.key_holder is None and first.request is not None
        row = first.request
        assert (row.status, row.message_id, row.platform, row.idempotency_key, row.compensation_payload) == (
            "pending", "m1", "sh-platform", "k1", '{"omsgid": "m1"}')
        assert store.requests(["c1"])["c1"] == row  # the claim's record (built, not read back) is the row
        second = store.open_request(request_row("c1", platform="other", deadline_in=5, message_id="m2"))
        assert second == Opened(row, False)  # the first claim holds it; the caller compares and refuses
        assert store.request_by_id("m1") == row
        assert store.request_by_id("m2") is None and store.request_by_id("m1\x00") is None
        assert set(store.requests(["c1", "nope", "\ud800"])) == {"c1"}

    def test_a_claim_takes_its_idempotency_key_in_the_same_transaction(self, store: StateStore) -> None:
        opened = store.open_request(request_row("c1", key="k1", message_id="m1"), key_claim("m1"))
        assert opened.ours and store.idempotent("sh-platform", "k1") == key_claim("m1")

    def test_a_key_held_by_another_message_claims_nothing(self, store: StateStore) -> None:
        store.remember_idempotent("sh-platform", "k1", key_claim("m0"))  # e.g. by POST /v1/messages
        opened = store.open_request(request_row("c1", key="k1", message_id="m1"), key_claim("m1"))
        assert opened == Opened(None, False, key_claim("m0"))
        assert store.requests(["c1"]) == {} and store.request_by_id("m1") is None

    def test_a_correlation_id_taken_leaves_the_key_unclaimed(self, store: StateStore) -> None:
        store.open_request(request_row("c1", message_id="m0"))
        opened = store.open_request(request_row("c1", key="k1", message_id="m1"), key_claim("m1"))
        assert not opened.ours and opened.request is not None and opened.request.message_id == "m0"
        assert store.idempotent("sh-platform", "k1") is None  # the key's claim was rolled back with the request's
        assert store.open_request(request_row("c2", key="k1", message_id="m2"), key_claim("m2")).ours

    def test_replied_and_timed_out_are_decided_once(self, store: StateStore) -> None:
        store.open_request(request_row("c1"))
        store.open_request(request_row("c2"))
        assert store.settle_request("c1", reply("r1"), 100.0)
        assert not store.settle_request("c1", None, 101.0)  # the deadline came second
        assert not store.settle_request("c1", reply("r9"), 102.0)
        assert store.settle_request("c2", None, 100.0)
        assert not store.settle_request("c2", reply("r2"), 101.0)  # the reply came second
        rows = store.requests(["c1", "c2"])
        assert rows["c1"].status == "replied" and rows["c1"].reply == reply("r1") and rows["c1"].replied_at == 100.0
        assert rows["c2"].status == "timed_out" and rows["c2"].reply is None

    def test_a_reply_answers_its_request_and_is_marked_seen_in_one_step_once(self, store: StateStore) -> None:
        store.open_request(request_row("c1"))
        store.open_request(request_row("c2"))
        store.open_request(request_row("c3"))
        store.settle_request("c2", None, 100.0)  # the deadline came first
        seen = [Decision(f"r{i}", "delivered", f"yrdx.sh.inbox:0:{i}") for i in range(5)]
        # One batch: c1 answered, c1 again (second: loses), c2 already timed out, c3 answered, an unknown id.
        won = store.answer_requests([("c1", reply("r0"), seen[0]), ("c1", reply("r1"), seen[1]),
                                     ("c2", reply("r2"), seen[2]), ("c3", reply("r3"), seen[3]),
                                     ("nope", reply("r4"), seen[4])], 100.0)
        assert won == [True, False, False, True, False]
        assert not store.answer_requests([("c1", reply("r9"), Decision("r9", "delivered", "x"))], 101.0)[0]
        assert store.answer_requests([], 102.0) == []
        # The losers mark nothing (their caller decides).
        assert store.seen([d.id for d in seen] + ["r9"]) == {"r0": seen[0], "r3": seen[3]}
        rows = store.requests(["c1", "c2", "c3"])
        assert (rows["c1"].status, rows["c1"].reply, rows["c1"].replied_at) == ("replied", reply("r0"), 100.0)
        assert rows["c3"].status == "replied" and rows["c3"].reply == reply("r3")
        assert rows["c2"].status == "timed_out" and rows["c2"].reply is None

    def test_the_watchers_read_names_the_requests_no_longer_pending(self, store: StateStore) -> None:
        for c in ("waits", "replied", "timed"):
            store.open_request(request_row(c))
        store.settle_request("replied", reply("r1"), 100.0)
        store.settle_request("timed", None, 100.0)
        assert store.settled_requests(["waits", "replied", "timed", "nope", "\ud800"]) == {"replied", "timed"}
        assert store.settled_requests([]) == set()

    def test_a_late_result_is_kept_once_after_the_deadline(self, store: StateStore) -> None:
        store.open_request(request_row("c1"))
        assert not store.late_result("c1", reply("r1"), 1.0)  # still pending: not late
        store.settle_request("c1", None, 1.0)
        assert store.record_compensation("c1", "comp-1")
        assert not store.record_compensation("c1", "comp-2")  # set once
        assert store.late_result("c1", reply("r1"), 2.0)
        assert not store.late_result("c1", reply("r2"), 3.0)
        row = store.requests(["c1"])["c1"]
        assert (row.status, row.compensation_id, row.reply) == ("late_result", "comp-1", reply("r1"))

    def test_a_compensation_recorded_after_a_late_result_keeps_late_result(self, store: StateStore) -> None:
        store.open_request(request_row("c1"))
        store.settle_request("c1", None, 1.0)
        store.late_result("c1", reply("r1"), 2.0)
        assert store.record_compensation("c1", "comp-1")
        row = store.requests(["c1"])["c1"]
        assert (row.status, row.compensation_id) == ("late_result", "comp-1")

    def test_overdue_lists_pending_past_deadline_and_owed_compensations(self, store: StateStore) -> None:
        now = time.time()
        store.open_request(request_row("late", deadline_in=-10))
        store.open_request(request_row("fresh", deadline_in=60))
        store.open_request(request_row("owed", deadline_in=-20, message_id="m-owed", payload='{"omsgid": "m-owed"}'))
        store.settle_request("owed", None, now)
        store.open_request(request_row("paid", deadline_in=-20, message_id="m-paid", payload='{"omsgid": "m-paid"}'))
        store.settle_request("paid", None, now)
        store.record_compensation("paid", "comp")
        # claimed by an earlier yrdx and never sent (no message id, nothing rendered): nothing to compensate
        store.open_request(request_row("unrendered", deadline_in=-20))
        store.settle_request("unrendered", None, now)
        store.open_request(request_row("plain", deadline_in=-20, compensation=None, message_id="m-plain"))
        store.settle_request("plain", None, now)
        got = [r.correlation_id for r in store.overdue_requests(now, now, 10)]
        assert got == ["owed", "late"]  # oldest deadline first
        assert [r.correlation_id for r in store.overdue_requests(now, now - 60, 10)] == ["late"]
        assert len(store.overdue_requests(now, now, 1)) == 1

    def test_two_stores_decide_a_request_once(self, db: Database, store: StateStore) -> None:
        other = db.open()
        store.open_request(request_row("c1"))
        held = other.open_request(request_row("c1", platform="x")).request
        assert held is not None and held.platform == "sh-platform"
        assert other.settle_request("c1", reply("r1"), 1.0)
        assert not store.settle_request("c1", None, 2.0)
        assert store.requests(["c1"])["c1"].status == "replied"

    # --- the schema, and more than one store on one database ------------------------------------------------

    def test_a_new_database_is_migrated_to_the_latest_version(self, db: Database, store: StateStore) -> None:
        assert store.schema_version == schema.LATEST
        assert [r[0] for r in db.sql("SELECT version FROM schema_version ORDER BY version")] == list(
            range(1, schema.LATEST + 1))
        assert store.available is True and store.backend == db.backend

    def test_reopening_keeps_the_state_and_migrates_nothing_again(self, db: Database, store: StateStore) -> None:
        store.deliver_to_inbox([inbox("m1")])
        store.put("k", b"v")
        store.close()
        again = db.open()
        assert again.get("k") == b"v" and again.inbox_depth() == 1
        assert db.sql("SELECT count(*) FROM schema_version")[0][0] == schema.LATEST

    def test_a_database_of_the_previous_version_is_migrated_with_its_rows(self, db: Database,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
        previous = schema.LATEST - 1
        with monkeypatch.context() as m:  # the gateway of the version before: its steps only
            m.setattr(schema, "LATEST", previous)
            m.setattr(schema, "SQLITE", schema.SQLITE[:previous])
            m.setattr(schema, "POSTGRES", schema.POSTGRES[:previous])
            old = db.open()
            assert old.schema_version == previous
            old.deliver_to_inbox([inbox("m1")])
            old.record_sent([sent_row("s1")], "accepted")
            old.close()
        store = db.open()
        assert store.schema_version == schema.LATEST
        assert [r[0] for r in db.sql("SELECT version FROM schema_version ORDER BY version")] == list(
            range(1, schema.LATEST + 1))
        assert store.seen(["m1"])["m1"].outcome == "delivered" and store.sent("s1") is not None
        index_names = ("SELECT name FROM sqlite_master WHERE type = 'index'" if db.backend == "sqlite" else
                       "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        assert {"inbox_acked", "seen_at", "sent_created", "idempotency_created", "requests_deadline"} <= {
            r[0] for r in db.sql(index_names)}

    def test_a_schema_newer_than_this_gateway_is_refused(self, db: Database, store: StateStore) -> None:
        db.sql("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
               (schema.LATEST + 1, "from the future", time.time()) if db.backend == "sqlite" else
               (schema.LATEST + 1, "from the future", "2030-01-01T00:00:00Z"))
        with pytest.raises(StateSchemaError, match=f"version {schema.LATEST + 1} is newer"):
            db.open()

    def test_two_stores_on_one_database_see_each_others_writes(self, db: Database, store: StateStore) -> None:
        other = db.open()
        store.deliver_to_inbox([inbox("m1")])
        assert other.seen(["m1"])["m1"].outcome == "delivered"
        assert [i.id for i in other.lease_inbox("p1", 10)] == ["m1"]
        assert store.lease_inbox("p1", 10) == []  # leased by the other store
        assert other.use_jti("j", time.time() + 60) and not store.use_jti("j", time.time() + 60)


class TestSqlite(StateContract):
    @pytest.fixture
    def db(self, tmp_path: Path) -> Iterator[Database]:
        d = SqliteDatabase(tmp_path / "state.sqlite")
        yield d
        d.close()
