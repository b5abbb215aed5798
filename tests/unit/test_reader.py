"""gateway.kafka.reader over a fake aiokafka consumer (no broker): reading a topic to its end as of the call,
following it from its end or from given offsets, stepping over a record the client library cannot decode, and
starting a failed client again where it stopped. tests/integration/test_countersign.py follows a real broker
past a real undecodable record.

`FakeCluster` is shared with the unit tests of the followers built on the reader (countersign, trust updates).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from gateway.kafka import reader, transport
from gateway.kafka.reader import TopicFollower, TopicRecord, follow_topic, read_topic

TOPIC = "yrdx.test"


@dataclass(frozen=True)
class Msg:
    """What aiokafka's ConsumerRecord carries, as far as the reader looks."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class Undecodable:
    """Stands on a partition for a record whose header key is not UTF-8: fetching it raises, as aiokafka does."""


@dataclass
class FakeCluster:
    logs: dict[str, dict[int, list[Msg | Undecodable]]] = field(default_factory=dict)
    start_failures: int = 0  # the next consumer starts raise KafkaConnectionError
    poll_failures: int = 0  # the next fetches raise KafkaConnectionError
    consumers: list[FakeConsumer] = field(default_factory=list)
    on_end_offsets: list[Callable[[], None]] = field(default_factory=list)  # run once, right after end_offsets

    def create(self, topic: str, partitions: int = 1) -> None:
        self.logs.setdefault(topic, {p: [] for p in range(partitions)})

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int = 0,
                headers: list[tuple[str, bytes]] | None = None) -> int:
        log = self.logs[topic][partition]
        log.append(Msg(topic, partition, len(log), key, value, headers or []))  # type: ignore[arg-type]
        return len(log) - 1

    def produce_undecodable(self, topic: str, partition: int = 0) -> int:
        log = self.logs[topic][partition]
        log.append(Undecodable())
        return len(log) - 1

    def partitions(self, topic: str) -> list[int]:
        return sorted(self.logs.get(topic, {}))

    def started(self) -> list[FakeConsumer]:
        return [c for c in self.consumers if c.running]


class FakeConsumer:
    """The part of AIOKafkaConsumer that gateway.kafka.reader and transport.read_one_at_a_time use."""

    def __init__(self, cluster: FakeCluster, **options: Any) -> None:
        self.cluster = cluster
        self.options = options
        self.running = False
        self.assigned: list[TopicPartition] = []
        self.pos: dict[TopicPartition, int] = {}
        cluster.consumers.append(self)

    async def start(self) -> None:
        if self.cluster.start_failures:
            self.cluster.start_failures -= 1
            raise KafkaConnectionError("the fake broker is down")
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def _log(self, tp: TopicPartition) -> list[Msg | Undecodable]:
        return self.cluster.logs[tp.topic][tp.partition]

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.pos[tp] = 0

    async def seek_to_end(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.pos[tp] = len(self._log(tp))

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return len(self._log(tp))

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {tp: len(self._log(tp)) for tp in tps}
        hooks, self.cluster.on_end_offsets[:] = list(self.cluster.on_end_offsets), []
        for hook in hooks:
            hook()
        return ends

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Msg]]:
        assert self.running
        if self.cluster.poll_failures:
            self.cluster.poll_failures -= 1
            raise KafkaConnectionError("the fake broker went away")
        out: dict[TopicPartition, list[Msg]] = {}
        n = 0
        for tp in tps or self.assigned:
            log, at = self._log(tp), self.pos[tp]
            taken: list[Msg] = []
            while at < len(log) and (max_records is None or n < max_records):
                m = log[at]
                if isinstance(m, Undecodable):
                    # As aiokafka: the whole call fails, and what it drained before the record is lost with it
                    # (positions stand past the records it drained from other partitions).
                    self.pos[tp] = at
                    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                taken.append(m)
                at += 1
                n += 1
            self.pos[tp] = at
            if taken:
                out[tp] = taken
        if not out:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
        return out


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    """A fake cluster behind gateway.kafka.reader: its consumers and its partition lookups."""
    fake = FakeCluster()

    async def partitions_of(kafka: object, topic: str) -> list[int]:
        return fake.partitions(topic)

    monkeypatch.setattr(reader, "AIOKafkaConsumer", lambda *a, **kw: FakeConsumer(fake, **kw))
    monkeypatch.setattr(reader, "partitions_of", partitions_of)
    yield fake


async def until(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


def values(records: list[TopicRecord]) -> list[bytes | None]:
    return [r.value if r.flaw is None else None for r in records]


# --- read_topic ---------------------------------------------------------------------------------------------


async def test_read_topic_reads_every_partition_from_the_beginning_to_the_end_seen_at_the_start(
        cluster: FakeCluster) -> None:
    cluster.create(TOPIC, partitions=2)
    for i in range(3):
        cluster.produce(TOPIC, f"a{i}".encode(), partition=0, headers=[("h", b"1"), ("h", b"2")])
    cluster.produce(TOPIC, b"b0", partition=1)
    cluster.on_end_offsets.append(lambda: cluster.produce(TOPIC, b"late", partition=0))

    got = await read_topic("127.0.0.1:1", TOPIC)
    assert sorted(values(got)) == [b"a0", b"a1", b"a2", b"b0"]  # not the record published after the start
    assert got[0].headers == {"h": b"2"}  # the last value of a repeated key
    consumer = cluster.consumers[-1]
    assert consumer.options["group_id"] is None and consumer.options["enable_auto_commit"] is False
    assert not consumer.running  # stopped afterwards


async def test_read_topic_of_a_topic_that_does_not_exist_is_empty(cluster: FakeCluster) -> None:
    assert await read_topic("127.0.0.1:1", "no.such.topic") == []
    assert cluster.consumers == []


async def test_read_topic_leaves_an_undecodable_record_to_its_caller(cluster: FakeCluster) -> None:
    """By default read_topic fails as the client library does (its callers say they cannot read the topic)."""
    cluster.create(TOPIC)
    cluster.produce(TOPIC, b"a")
    cluster.produce_undecodable(TOPIC)
    with pytest.raises(UnicodeDecodeError):
        await read_topic("127.0.0.1:1", TOPIC)
    got = await read_topic("127.0.0.1:1", TOPIC, step_over=True)  # unless asked to step over it
    assert [(r.offset, r.flaw is not None) for r in got] == [(0, False), (1, True)]


async def test_read_topic_gives_up_after_its_timeout(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.create(TOPIC)
    cluster.produce(TOPIC, b"a")

    async def stuck(self: FakeConsumer, *tps: TopicPartition, **kw: Any) -> dict[TopicPartition, list[Msg]]:
        await asyncio.sleep(1)
        return {}

    monkeypatch.setattr(FakeConsumer, "getmany", stuck)
    with pytest.raises(TimeoutError):
        await read_topic("127.0.0.1:1", TOPIC, timeout_s=0.1)
    assert not cluster.started()


# --- TopicFollower ------------------------------------------------------------------------------------------


async def test_a_follower_started_from_the_end_reads_only_what_comes_after(cluster: FakeCluster) -> None:
    cluster.create(TOPIC, partitions=2)
    cluster.produce(TOPIC, b"old", partition=0)
    async with TopicFollower("127.0.0.1:1", TOPIC) as follower:
        await follower.start()
        assert follower.partitions == [0, 1] and follower.positions() == {0: 1, 1: 0}
        assert await follower.poll(timeout_ms=10) == []
        cluster.produce(TOPIC, b"new0", partition=0)
        cluster.produce(TOPIC, b"new1", partition=1)
        assert sorted(values(await follower.poll(timeout_ms=10))) == [b"new0", b"new1"]
        assert follower.positions() == {0: 2, 1: 1}
    assert cluster.consumers[-1].options["auto_offset_reset"] == "latest" and not cluster.consumers[-1].running


async def test_a_follower_started_at_offsets_reads_those_partitions_from_there(cluster: FakeCluster) -> None:
    cluster.create(TOPIC, partitions=3)
    for p in range(3):
        for i in range(3):
            cluster.produce(TOPIC, f"{p}:{i}".encode(), partition=p)
    async with TopicFollower("127.0.0.1:1", TOPIC) as follower:
        await follower.start({0: None, 1: 2})  # partition 2 is not followed
        assert await follower.end_offsets() == {0: 3, 1: 3}
        assert values(await follower.poll(timeout_ms=10, partitions=[1])) == [b"1:2"]
        assert values(await follower.poll(timeout_ms=10)) == [b"0:0", b"0:1", b"0:2"]
        await follower.seek({0: 1})
        assert await follower.position(0) == 1 and follower.positions()[0] == 1
        assert values(await follower.poll(timeout_ms=10, max_records=1)) == [b"0:1"]
        assert await follower.poll(timeout_ms=10, partitions=[]) == []
    assert cluster.consumers[-1].options["auto_offset_reset"] == "earliest"


async def test_a_follower_steps_over_a_record_the_client_library_cannot_decode(cluster: FakeCluster) -> None:
    cluster.create(TOPIC, partitions=2)
    async with TopicFollower("127.0.0.1:1", TOPIC) as follower:
        await follower.start()
        cluster.produce(TOPIC, b"p1-a", partition=1)
        cluster.produce(TOPIC, b"a", partition=0)
        bad = cluster.produce_undecodable(TOPIC, partition=0)
        cluster.produce(TOPIC, b"b", partition=0)
        got = await follower.poll(timeout_ms=10)
        assert sorted((r.partition, r.offset, r.value) for r in got) == [(0, 0, b"a"), (0, 1, b""), (0, 2, b"b"),
                                                                         (1, 0, b"p1-a")]
        flawed = next(r for r in got if r.flaw is not None)
        assert (flawed.offset, flawed.key, flawed.headers) == (bad, None, {})
        assert flawed.flaw == "the client library cannot decode the record: UnicodeDecodeError"
        assert follower.positions() == {0: 3, 1: 1}
        cluster.produce(TOPIC, b"c", partition=0)  # and it goes on as before
        assert values(await follower.poll(timeout_ms=10)) == [b"c"]


async def test_a_follower_without_step_over_raises_the_library_error(cluster: FakeCluster) -> None:
    cluster.create(TOPIC)
    cluster.produce_undecodable(TOPIC)
    async with TopicFollower("127.0.0.1:1", TOPIC, step_over=False) as follower:
        await follower.start({0: None})
        with pytest.raises(UnicodeDecodeError):
            await follower.poll(timeout_ms=10)


async def test_a_follower_of_a_topic_not_created_yet_reads_it_from_the_beginning_once_it_is(
        cluster: FakeCluster) -> None:
    async with TopicFollower("127.0.0.1:1", TOPIC) as follower:
        await follower.start()
        assert follower.partitions == [] and await follower.poll(timeout_ms=5) == []
        cluster.create(TOPIC)
        cluster.produce(TOPIC, b"first")
        assert await follower.poll(timeout_ms=5) == []  # found the partition, placed at its beginning
        assert values(await follower.poll(timeout_ms=5)) == [b"first"]


async def test_a_follower_not_started_says_so(cluster: FakeCluster) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await TopicFollower("127.0.0.1:1", TOPIC).poll()


async def test_a_follower_whose_start_fails_stops_its_client(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    async def broken(kafka: object, topic: str) -> list[int]:
        raise KafkaConnectionError("no metadata")

    monkeypatch.setattr(reader, "partitions_of", broken)
    with pytest.raises(KafkaConnectionError):
        await TopicFollower("127.0.0.1:1", TOPIC).start()
    assert cluster.consumers and not cluster.started()


# --- follow_topic -------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def following(topic: str = TOPIC) -> AsyncIterator[list[TopicRecord]]:
    """follow_topic running in a task, its records gathered into the list yielded."""
    seen: list[TopicRecord] = []

    async def run() -> None:
        async with contextlib.aclosing(follow_topic("127.0.0.1:1", topic, timeout_ms=5, retry_s=0.01)) as batches:
            async for batch in batches:
                seen.extend(batch)

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_follow_topic_goes_on_past_undecodable_records_and_failing_clients(cluster: FakeCluster) -> None:
    cluster.create(TOPIC)
    cluster.produce(TOPIC, b"before")
    cluster.start_failures = 2  # the broker is not there at first
    async with following() as seen:
        await until(lambda: bool(cluster.started()))
        cluster.produce(TOPIC, b"1")
        cluster.produce_undecodable(TOPIC)
        cluster.produce(TOPIC, b"2")
        await until(lambda: len(seen) == 3)
        first = cluster.started()[0]
        cluster.poll_failures = 1  # the client fails: a new one resumes where the first stopped
        await until(lambda: first not in cluster.started() and bool(cluster.started()))
        cluster.produce(TOPIC, b"3")
        await until(lambda: len(seen) == 4)
    assert values(seen) == [b"1", None, b"2", b"3"]  # nothing from before the start, nothing twice or skipped
    assert not cluster.started()  # cancelled: its client is stopped


def test_the_inbox_consumer_and_the_followers_step_over_with_one_helper() -> None:
    assert reader.read_one_at_a_time is transport.read_one_at_a_time
