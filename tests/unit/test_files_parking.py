"""Parked messages (gateway/files/parking.py and the state store's parking calls), on SQLite and on PostgreSQL:
a record kept whole, taken back in order per conversation, leased by one caller at a time, forgotten once decided."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.files.parking import AHEAD_DECIDED, FILES_DECIDED, WAIT_PASSED, as_record, parked_row, ready
from gateway.files.store import StoredFile
from gateway.kafka.port import InRecord
from gateway.state import ParkedMessage, StateStore

FILE_A = "01a2331f-e92c-7726-89d0-0589540e5607"
FILE_B = "01a2331f-e92c-7726-89d0-0589540e5608"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        s = StateStore(tmp_path / "state.db")
    else:
        s = StateStore(dsn=request.getfixturevalue("postgres_db"))
    yield s
    s.close()


def record(offset: int, key: bytes | None = b"k") -> InRecord:
    return InRecord("yrdx.sh.inbox", 2, offset, key, b'{"id":"m%d"}' % offset,
                    {"yrdx-signature": b"sig.\x00\xff", "yrdx-replay-of": b"x"})


def row(offset: int, conversation: str, files: tuple[str, ...] = (FILE_A,), deadline: float = 0.0) -> ParkedMessage:
    return parked_row(record(offset), f"m{offset}", conversation, files, deadline or time.time() + 60)


def test_a_parked_record_comes_back_exactly_as_it_was_read() -> None:
    for key in (b"k", None):
        r = record(7, key)
        assert as_record(parked_row(r, "m7", "c", (FILE_A,), 0.0)) == r


def test_ready_takes_each_conversation_in_order_up_to_the_first_that_must_wait() -> None:
    now = time.time()
    decided = {FILE_A: StoredFile(FILE_A, "JS", "complete", {})}
    parked = [
        ParkedMessage("s1", "m1", "c1", b"", b"", (FILE_A,), now + 60, seq=1),  # its file is decided
        ParkedMessage("s2", "m2", "c1", b"", b"", (), now + 60, seq=2),  # behind it
        ParkedMessage("s3", "m3", "c1", b"", b"", (FILE_B,), now + 60, seq=3),  # its own file still arriving
        ParkedMessage("s4", "m4", "c1", b"", b"", (), now + 60, seq=4),  # behind that one: waits
        ParkedMessage("s5", "m5", "c2", b"", b"", (FILE_B,), now - 1, seq=5),  # its wait has passed
        ParkedMessage("s6", "m6", "c3", b"", b"", (FILE_B,), now + 60, seq=6),  # waits
    ]
    taken = [[(m.source, why) for m, why in conv] for conv in ready(parked, decided.get, now)]
    assert taken == [[("s1", FILES_DECIDED), ("s2", AHEAD_DECIDED)], [("s5", WAIT_PASSED)]]


def test_park_is_once_per_source_and_lists_in_order(store: StateStore) -> None:
    store.park([row(1, "c1"), row(2, "c2", ())])
    store.park([row(1, "c1")])  # read again after a crash before the commit
    assert store.parked_count() == 2
    got = store.parked(10)
    assert [m.source for m in got] == ["yrdx.sh.inbox:2:1", "yrdx.sh.inbox:2:2"]
    assert got[0].file_ids == (FILE_A,) and got[1].file_ids == ()
    assert as_record(got[0]) == record(1)
    assert store.parked_conversations(["c1", "c3", "\x00"]) == {"c1"}


def test_a_leased_conversation_is_taken_by_one_caller_until_released(store: StateStore, tmp_path: Path) -> None:
    store.park([row(1, "c1"), row(2, "c1", ()), row(3, "c2")])
    assert store.lease_parked("c1", 60) == {"yrdx.sh.inbox:2:1", "yrdx.sh.inbox:2:2"}
    assert store.lease_parked("c1", 60) == set()  # held: another replica gets nothing
    assert [m.correlation_id for m in store.parked(10)] == ["c2"]  # a held conversation is not listed
    store.park([row(4, "c1", ())])  # parked behind while held: not listed either
    assert [m.correlation_id for m in store.parked(10)] == ["c2"]
    store.unpark(["yrdx.sh.inbox:2:1", "yrdx.sh.inbox:2:2"], ["c1"])
    assert [m.source for m in store.parked(10)] == ["yrdx.sh.inbox:2:3", "yrdx.sh.inbox:2:4"]
    assert store.parked_conversations(["c1"]) == {"c1"}
    assert store.lease_parked("c1", 0.0) == {"yrdx.sh.inbox:2:4"}
    time.sleep(0.01)
    assert store.lease_parked("c1", 60) == {"yrdx.sh.inbox:2:4"}  # a lapsed lease can be taken again
