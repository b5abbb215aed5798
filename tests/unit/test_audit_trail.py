"""A gateway's own audit chain (gateway.audit.trail.AuditTrail) over the in-memory Kafka twin: records chained by
hash, published as signed segments only when `durable()` is awaited, kept when the broker is down, resumed after
a restart, and a signed head announced on `yrdx.checkpoints`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from gateway.audit import trail as trail_module
from gateway.audit.model import GENESIS, parse_segment, record_hash, segment_break, segment_fault
from gateway.audit.trail import AuditTrail
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout
from gateway.kafka.memory import MemoryBroker, MemoryPublisher
from gateway.kafka.port import BrokerUnavailable, OutRecord
from gateway.state import StateStore
from gateway.wire.regions import Topics
from tests.unit.test_audit_verify import pki, signer_of, trust

__all__ = ["pki", "trust"]  # the fixtures of test_audit_verify

TOPICS = Topics("t")


def new_trail(pki: PkiLayout, tmp_path: Path, broker: MemoryBroker, **kw: bool) -> AuditTrail:
    return AuditTrail("JS", signer_of(pki, "JS"), StateStore(tmp_path / "state.sqlite"), MemoryPublisher(broker),
                      topics=TOPICS, **kw)


async def test_records_are_chained_and_published_as_one_signed_segment(pki: PkiLayout, trust: TrustStore,
                                                                       tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    assert audit.append("accepted", "m-1", "a" * 64, "c-1", platform="js-platform") == 1
    assert audit.append("published", "m-1", "a" * 64, "c-1", topic="t.yrdx.sh.inbox") == 2
    assert audit.pending() == 2 and broker.records(TOPICS.audit) == []  # nothing is published by append
    await audit.durable()
    assert audit.pending() == 0
    [on_topic] = broker.records(TOPICS.audit)
    assert on_topic.key == b"JS" and orjson.loads(on_topic.value)["format"] == 3
    seg = parse_segment(on_topic.value)
    first, second = seg.records
    assert (first["prev_hash"], second["prev_hash"]) == (GENESIS, first["hash"])
    assert record_hash(first["prev_hash"], first) == first["hash"]
    assert first["entries"] == [["m-1", "c-1", "a" * 64, {"platform": "js-platform"}]]
    assert (first["message_id"], first["envelope_sha256"], first["detail"]) == ("", None, {})
    assert segment_break(seg) is None and segment_fault(seg, trust) is None
    assert audit.head.seq == 2 and audit.head.hash == second["hash"]
    await audit.durable()  # nothing new: nothing published
    assert len(broker.records(TOPICS.audit)) == 1
    with pytest.raises(AssertionError):
        audit.append("no-such-stage", "", None)


async def test_one_stage_of_a_batch_is_one_record_with_an_entry_per_message(pki: PkiLayout, trust: TrustStore,
                                                                           tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    seqs = [audit.append("received", f"m-{i}", f"{i:064x}", source="p0@1") for i in range(3)]
    seqs += [audit.append("verified", f"m-{i}", f"{i:064x}", f"c-{i}", signer="ab") for i in range(3)]
    seqs.append(audit.append("checkpoint", "", None))  # no message: a record of its own, which closes the batch
    seqs.append(audit.append("verified", "m-3", "3" * 64, "c-3", signer="ab"))
    assert seqs == [1, 1, 1, 2, 2, 2, 3, 4]
    await audit.durable()
    seg = parse_segment(broker.records(TOPICS.audit)[0].value)
    assert [(r["stage"], len(r.get("entries", []))) for r in seg.records] == [
        ("received", 3), ("verified", 3), ("checkpoint", 0), ("verified", 1)]
    assert segment_break(seg) is None and segment_fault(seg, trust) is None
    views = seg.entries()
    assert [(v["stage"], v["message_id"], v.get("entry")) for v in views[:4]] == [
        ("received", "m-0", 0), ("received", "m-1", 1), ("received", "m-2", 2), ("verified", "m-0", 0)]
    assert views[4]["correlation_id"] == "c-1" and views[4]["detail"] == {"signer": "ab"}
    assert views[4]["hash"] == seg.records[1]["hash"] and views[4]["seq"] == 2
    assert views[6] is seg.records[2]  # a record without entries is its own view
    # An entry changed after the fact no longer matches the record's hash: the checkpoint covers every entry.
    seg.records[1]["entries"][2][2] = "f" * 64
    assert segment_break(seg) == "record 2 does not match its hash"


async def test_a_batch_record_takes_no_entries_once_its_segment_is_cut(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    audit.append("delivered", "m-1", "1" * 64, platform="p")
    await audit.durable()
    assert audit.append("delivered", "m-2", "2" * 64, platform="p") == 2  # a new record, not the hashed one
    await audit.durable()
    first, second = (parse_segment(r.value) for r in broker.records(TOPICS.audit))
    assert [e[0] for e in first.records[0]["entries"]] == ["m-1"]
    assert [e[0] for e in second.records[0]["entries"]] == ["m-2"]
    assert second.records[0]["prev_hash"] == first.records[0]["hash"]


async def test_a_batch_record_is_capped_in_entries(pki: PkiLayout, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail_module, "BATCH_ENTRIES", 2)
    audit = new_trail(pki, tmp_path, MemoryBroker(partitions=1))
    assert [audit.append("received", f"m-{i}", None) for i in range(5)] == [1, 1, 2, 2, 3]


async def test_without_batch_records_a_gateway_writes_format_1_as_before(pki: PkiLayout, trust: TrustStore,
                                                                         tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker, batch_records=False)
    assert [audit.append("accepted", f"m-{i}", "a" * 64, "c-1", platform="js") for i in range(2)] == [1, 2]
    await audit.durable()
    raw = orjson.loads(broker.records(TOPICS.audit)[0].value)
    assert "format" not in raw and "chain" not in raw
    seg = parse_segment(broker.records(TOPICS.audit)[0].value)
    assert [r["message_id"] for r in seg.records] == ["m-0", "m-1"] and seg.entries() == seg.records
    assert seg.records[0]["detail"] == {"platform": "js"} and "entries" not in seg.records[0]
    assert segment_break(seg) is None and segment_fault(seg, trust) is None


async def test_records_stay_pending_while_the_broker_is_down(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1, down=True)
    audit = new_trail(pki, tmp_path, broker)
    audit.append("checkpoint", "", None)
    with pytest.raises(BrokerUnavailable):
        await audit.durable()
    assert audit.pending() == 1
    audit.append("checkpoint", "", None)
    broker.down = False
    await audit.durable()
    [on_topic] = broker.records(TOPICS.audit)
    assert [r["seq"] for r in parse_segment(on_topic.value).records] == [1, 2]


async def test_batch_records_of_a_failed_flush_keep_their_hashes_and_the_chain_goes_on(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path,
) -> None:
    broker = MemoryBroker(partitions=1, down=True)
    audit = new_trail(pki, tmp_path, broker)
    audit.append("delivered", "m-1", "1" * 64, platform="p")
    with pytest.raises(BrokerUnavailable):
        await audit.durable()
    audit.append("delivered", "m-2", "2" * 64, platform="p")  # the failed one is hashed: a record of its own
    broker.down = False
    await audit.durable()
    [seg] = [parse_segment(r.value) for r in broker.records(TOPICS.audit)]
    assert [[e[0] for e in r["entries"]] for r in seg.records] == [["m-1"], ["m-2"]]
    assert segment_break(seg) is None and segment_fault(seg, trust) is None and audit.pending() == 0


async def test_a_restart_continues_the_chain_with_a_resumed_record(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    audit.append("checkpoint", "", None)
    await audit.durable()
    audit.append("checkpoint", "", None)  # appended, never published: the gateway crashes
    again = new_trail(pki, tmp_path, broker)
    assert again.pending() == 1  # the resumed record
    await again.durable()
    assert again.head.seq == 2
    resumed = parse_segment(broker.records(TOPICS.audit)[-1].value).records[-1]
    assert (resumed["seq"], resumed["stage"], resumed["detail"]) == (2, "resumed", {"saved_seq": 1})


async def test_a_disabled_trail_appends_nothing(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker, enabled=False)
    assert audit.append("checkpoint", "", None) == 0
    await audit.durable()
    assert broker.records(TOPICS.audit) == []


async def test_a_long_run_is_split_into_segments_that_each_hold(pki: PkiLayout, trust: TrustStore, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail_module, "SEGMENT_RECORDS", 3)
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    for _ in range(7):
        audit.append("checkpoint", "", None)
    await audit.durable()
    segments = [parse_segment(r.value) for r in broker.records(TOPICS.audit)]
    assert [len(s.records) for s in segments] == [3, 3, 1]
    assert all(segment_break(s) is None and segment_fault(s, trust) is None for s in segments)


async def test_a_flush_too_large_for_one_broker_record_is_split_by_size(
        pki: PkiLayout, trust: TrustStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under SEGMENT_RECORDS but over SEGMENT_MAX_BYTES: halved until each segment fits, the chain unbroken (one
    oversize record was refused by the broker at every retry, and the trail stalled)."""
    monkeypatch.setattr(trail_module, "SEGMENT_MAX_BYTES", 4096)
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    for i in range(40):  # stages alternate: each entry a record of its own (a stage's run is one batch record)
        audit.append("rejected" if i % 2 else "dead_lettered", f"m-{i}", None, reason="x" * 200)
    await audit.durable()
    values = [r.value for r in broker.records(TOPICS.audit)]
    segments = [parse_segment(v) for v in values]
    assert len(segments) > 1 and all(len(v) <= 4096 for v in values)
    assert sum(len(s.records) for s in segments) == 40
    assert all(segment_break(s) is None and segment_fault(s, trust) is None for s in segments)


async def test_the_periodic_flush_publishes_and_announces_a_signed_head(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker)
    audit.append("rejected", "m-2", None, reason="bad_signature")  # nobody waits for it
    task = asyncio.create_task(audit.run_periodic_flush(interval_s=0.005, checkpoint_every_s=0.02))
    try:
        async with asyncio.timeout(5):
            while not broker.records(TOPICS.checkpoints):
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    announced = orjson.loads(broker.records(TOPICS.checkpoints)[0].value)
    assert set(announced) == {"region", "at", "seq", "hash", "jws"} and announced["region"] == "JS"
    on_topic = [r for v in broker.records(TOPICS.audit) for r in parse_segment(v.value).records]
    assert [r["stage"] for r in on_topic][:2] == ["rejected", "checkpoint"]
    assert (announced["seq"], announced["hash"]) in {(r["seq"], r["hash"]) for r in on_topic}


class CountingPublisher(MemoryPublisher):
    """Counts produce calls: what rides with a segment must share its call."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.calls: list[list[str]] = []

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self.calls.append([r.topic for r in records])
        await asyncio.sleep(0)  # a real produce yields: flushes may overlap
        await super().publish(records)


async def test_riders_travel_in_the_same_produce_call_as_the_segment(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    publisher = CountingPublisher(broker)
    audit = AuditTrail("JS", signer_of(pki, "JS"), StateStore(tmp_path / "s.sqlite"), publisher, topics=TOPICS)
    audit.append("accepted", "m-1", "a" * 64, "c-1")
    await audit.durable(riders=[OutRecord("t.yrdx.sh.inbox", b"message", b"k")])
    assert publisher.calls == [["t.yrdx.sh.inbox", TOPICS.audit]]
    assert audit.pending() == 0 and [r.value for r in broker.records("t.yrdx.sh.inbox")] == [b"message"]


async def test_concurrent_callers_share_one_flush_and_none_returns_before_its_riders_are_sent(
    pki: PkiLayout, tmp_path: Path,
) -> None:
    broker = MemoryBroker(partitions=1)
    publisher = CountingPublisher(broker)
    audit = AuditTrail("JS", signer_of(pki, "JS"), StateStore(tmp_path / "s.sqlite"), publisher, topics=TOPICS)

    async def request(i: int) -> int:
        audit.append("accepted", f"m-{i}", "a" * 64, f"c-{i}")
        await audit.durable(riders=[OutRecord("inbox", f"message {i}".encode(), b"k")])
        return len(broker.records("inbox"))  # what is on the "broker" when this caller is answered

    seen = await asyncio.gather(*(request(i) for i in range(20)))
    assert sorted(r.value for r in broker.records("inbox")) == sorted(f"message {i}".encode() for i in range(20))
    assert len(publisher.calls) <= 3  # group commit: not one call per request
    assert all(n >= 1 for n in seen)
    segments = [parse_segment(raw.value) for raw in broker.records(TOPICS.audit)]
    chain = [rec["seq"] for seg in segments for rec in seg.records]
    assert chain == list(range(1, len(chain) + 1)) and len(chain) <= 3  # one batch record per flush
    assert sorted(e["message_id"] for seg in segments for e in seg.entries()) == sorted(f"m-{i}" for i in range(20))


async def test_riders_of_a_failed_flush_are_never_sent_later(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1, down=True)
    audit = new_trail(pki, tmp_path, broker)
    audit.append("accepted", "m-1", "a" * 64, "c-1")
    with pytest.raises(BrokerUnavailable):
        await audit.durable(riders=[OutRecord("inbox", b"refused message", b"k")])
    broker.down = False
    await audit.durable()  # the audit record is kept and published; the refused message is not
    assert broker.records("inbox") == [] and audit.pending() == 0


async def test_riders_are_published_with_the_audit_trail_disabled(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    audit = new_trail(pki, tmp_path, broker, enabled=False)
    await audit.durable(riders=[OutRecord("inbox", b"message", b"k")])
    assert [r.value for r in broker.records("inbox")] == [b"message"] and broker.records(TOPICS.audit) == []


class SlowPublisher(CountingPublisher):
    """A produce that takes `delay_s`, as a broker round trip does: flushes in flight can be caught."""

    def __init__(self, broker: MemoryBroker, delay_s: float) -> None:
        super().__init__(broker)
        self.delay_s = delay_s

    async def publish(self, records: Sequence[OutRecord]) -> None:
        await asyncio.sleep(self.delay_s)
        await super().publish(records)


def counting_trail(pki: PkiLayout, tmp_path: Path, publisher: CountingPublisher) -> AuditTrail:
    return AuditTrail("JS", signer_of(pki, "JS"), StateStore(tmp_path / "s.sqlite"), publisher, topics=TOPICS)


async def test_records_nobody_else_waits_for_ride_with_the_next_callers_flush(pki: PkiLayout, tmp_path: Path) -> None:
    """An origin's receipts, applied, wait for the next ingress group's flush instead of starting one of their
    own that the group would have to wait for: one produce call carries both."""
    broker = MemoryBroker(partitions=1)
    publisher = CountingPublisher(broker)
    audit = counting_trail(pki, tmp_path, publisher)
    audit.append("receipt_received", "m-1", "a" * 64, "c-1", outcome="delivered")
    receipts = asyncio.create_task(audit.durable(wait_s=5.0))
    await asyncio.sleep(0.01)
    assert publisher.calls == [] and not receipts.done()  # waiting for a carrier, not flushing alone
    audit.append("accepted", "m-2", "b" * 64, "c-2")
    await audit.durable(riders=[OutRecord("t.yrdx.sh.inbox", b"message", b"k")])
    async with asyncio.timeout(1):
        await receipts
    assert publisher.calls == [["t.yrdx.sh.inbox", TOPICS.audit]]
    assert audit.pending() == 0
    stages = [r["stage"] for raw in broker.records(TOPICS.audit) for r in parse_segment(raw.value).records]
    assert stages == ["receipt_received", "accepted"]


async def test_records_nobody_carries_are_flushed_alone_after_the_wait(pki: PkiLayout, tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    publisher = CountingPublisher(broker)
    audit = counting_trail(pki, tmp_path, publisher)
    audit.append("receipt_received", "m-1", "a" * 64, "c-1", outcome="delivered")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(2):
        await audit.durable(wait_s=0.05)
    assert loop.time() - started >= 0.045  # it did wait for a carrier first
    assert publisher.calls == [[TOPICS.audit]] and audit.pending() == 0


async def test_a_flush_in_flight_does_not_carry_records_appended_after_it_began(pki: PkiLayout,
                                                                              tmp_path: Path) -> None:
    """Records appended while a flush is in flight wait for the next flush (someone else's, if one begins within
    the wait), not for a flush of their own right after the one in flight."""
    broker = MemoryBroker(partitions=1)
    publisher = SlowPublisher(broker, delay_s=0.02)
    audit = counting_trail(pki, tmp_path, publisher)
    audit.append("accepted", "m-1", "a" * 64, "c-1")
    first = asyncio.create_task(audit.durable(riders=[OutRecord("inbox", b"one", b"k")]))
    await asyncio.sleep(0.005)  # the first flush is in flight
    audit.append("receipt_received", "m-0", "0" * 64, "c-0", outcome="delivered")
    receipts = asyncio.create_task(audit.durable(wait_s=5.0))
    await first
    await asyncio.sleep(0.03)
    assert len(publisher.calls) == 1 and not receipts.done()  # not flushed alone once the first had landed
    audit.append("accepted", "m-2", "b" * 64, "c-2")
    await audit.durable(riders=[OutRecord("inbox", b"two", b"k")])
    async with asyncio.timeout(1):
        await receipts
    assert publisher.calls == [["inbox", TOPICS.audit], ["inbox", TOPICS.audit]] and audit.pending() == 0


async def test_a_caller_with_riders_never_waits_for_a_carrier(pki: PkiLayout, tmp_path: Path) -> None:
    """Riders cannot join a flush begun without them: `wait_s` is ignored when a step sends records."""
    broker = MemoryBroker(partitions=1)
    publisher = CountingPublisher(broker)
    audit = counting_trail(pki, tmp_path, publisher)
    audit.append("delivered", "m-1", "a" * 64, "c-1")
    async with asyncio.timeout(1):
        await audit.durable(riders=[OutRecord("t.yrdx.js.inbox", b"receipt", b"k")], wait_s=30.0)
    assert publisher.calls == [["t.yrdx.js.inbox", TOPICS.audit]]


async def test_the_periodic_flush_leaves_records_to_a_busy_gateways_next_flush(pki: PkiLayout,
                                                                             tmp_path: Path) -> None:
    """Under traffic the ingress flushes come faster than the periodic one: records left over (`published`) ride
    with the next of them instead of a flush of their own; on an idle gateway they still leave within an interval
    or two."""
    broker = MemoryBroker(partitions=1)
    publisher = CountingPublisher(broker)
    audit = counting_trail(pki, tmp_path, publisher)
    task = asyncio.create_task(audit.run_periodic_flush(interval_s=0.1, checkpoint_every_s=3600))
    try:
        for i in range(8):  # a busy gateway: a flush every 20 ms, each leaving a record behind
            audit.append("accepted", f"m-{i}", "a" * 64, f"c-{i}")
            await audit.durable(riders=[OutRecord("inbox", f"message {i}".encode(), b"k")])
            audit.append("published", f"m-{i}", "a" * 64, f"c-{i}", topic="inbox")
            await asyncio.sleep(0.02)
        assert all(call[0] == "inbox" for call in publisher.calls)  # no flush of the periodic task's own
        async with asyncio.timeout(2):  # then idle: the last `published` still leaves
            while audit.pending():
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert publisher.calls[-1] == [TOPICS.audit]
