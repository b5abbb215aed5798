"""The inbox consumer's offset commits (gateway/kafka/transport.py) over a stand-in for aiokafka's consumer:
only decided offsets are committed, several batches share one background commit, and nothing decided is left
uncommitted at a revoke or a stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from aiokafka.structs import ConsumerRecord

from gateway.config import KafkaConfig
from gateway.kafka.port import InRecord
from gateway.kafka.transport import KafkaInboxConsumer

TOPIC = "yrdx.sh.inbox"


class FakeClient:
    def __init__(self) -> None:
        self.commits: list[dict[int, int]] = []
        self.gate: asyncio.Event | None = None  # when set, a commit waits for it (a slow round trip)
        self.fail: BaseException | None = None
        self.fetches: list[list[Any]] = []  # what getmany hands out, one list of records per call

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.commits.append({tp.partition: o for tp, o in offsets.items()})

    async def getmany(self, **_: Any) -> dict[Any, list[Any]]:
        if not self.fetches:
            return {}
        got = self.fetches.pop(0)
        return {TopicPartition(TOPIC, got[0].partition): got}

    async def stop(self) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return set()


def record(partition: int, offset: int) -> InRecord:
    return InRecord(TOPIC, partition, offset, None, b"{}", {})


async def consumer(interval: float) -> tuple[KafkaInboxConsumer, FakeClient]:
    c = KafkaInboxConsumer(KafkaConfig(), TOPIC, "yrdx-sh", commit_interval_s=interval)
    await c._consumer.stop()  # noqa: SLF001 (never started; closed so that it leaves no warning behind)
    fake = FakeClient()
    c._consumer = fake  # noqa: SLF001 (the stand-in)
    return c, fake


async def test_without_an_interval_each_batch_is_committed_before_commit_returns() -> None:
    c, fake = await consumer(0.0)
    await c.commit([record(0, 4), record(1, 2), record(0, 5)])
    assert fake.commits == [{0: 6, 1: 3}]


async def test_batches_decided_within_the_interval_share_one_background_commit() -> None:
    c, fake = await consumer(60.0)
    await c.commit([record(0, 0)])
    await asyncio.sleep(0)
    assert fake.commits == [{0: 1}]  # the first one at once
    await c.commit([record(0, 1)])
    await c.commit([record(0, 2), record(1, 7)])
    await asyncio.sleep(0)
    assert fake.commits == [{0: 1}]  # not yet: the interval has not passed
    await c.poll()  # an empty poll: idle, so what is decided is committed now
    await asyncio.sleep(0)
    assert fake.commits == [{0: 1}, {0: 3, 1: 8}]


async def test_a_stop_commits_what_was_decided_and_a_failed_commit_is_retried() -> None:
    c, fake = await consumer(60.0)
    await c.commit([record(0, 0)])
    await asyncio.sleep(0)
    fake.fail = KafkaConnectionError()
    await c.commit([record(0, 1)])
    await c.poll()  # the idle commit fails: its offsets stay decided
    await asyncio.sleep(0)
    assert fake.commits == [{0: 1}]
    await c.stop()
    assert fake.commits == [{0: 1}, {0: 2}]


async def test_a_revoke_waits_for_the_batch_in_hand_and_the_commit_in_flight() -> None:
    c, fake = await consumer(60.0)
    fake.gate = asyncio.Event()
    await c.commit([record(0, 0)])  # in flight, held at the gate
    c._settled.clear()  # noqa: SLF001 (a batch polled and in hand)
    revoke = asyncio.create_task(c.settle({TopicPartition(TOPIC, 0)}))
    await asyncio.sleep(0.01)
    assert not revoke.done()
    await c.commit([record(0, 1)])  # the batch in hand decided
    await asyncio.sleep(0.01)
    assert not revoke.done()  # the commit in flight is still held
    fake.gate.set()
    await asyncio.wait_for(revoke, 1)
    assert fake.commits == [{0: 1}, {0: 2}]


async def test_a_commit_refused_by_the_group_abandons_the_batch_without_an_error() -> None:
    c, fake = await consumer(0.0)
    fake.fail = CommitFailedError()
    await c.commit([record(0, 0)])
    assert fake.commits == []
    assert c._decided == {}  # noqa: SLF001 (the new owner reads it again)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR")


async def test_a_revoke_waits_until_every_batch_in_hand_is_decided() -> None:
    """Egress may hold two batches (one whose audit records wait for a carrier, relay/egress.py): the first
    one's commit does not settle the consumer while the second is still in hand."""
    c, fake = await consumer(0.0)
    fake.fetches = [[ConsumerRecord(TOPIC, 0, 0, 0, 0, b"k", b"{}", None, 1, 2, [])],
                    [ConsumerRecord(TOPIC, 0, 1, 0, 0, b"k", b"{}", None, 1, 2, [])]]
    first, second = await c.poll(), await c.poll()
    revoke = asyncio.create_task(c.settle({TopicPartition(TOPIC, 0)}))
    await c.commit(first)
    await asyncio.sleep(0.01)
    assert not revoke.done()  # the second batch is still being handled
    await c.commit(second)
    await asyncio.wait_for(revoke, 1)
    assert fake.commits == [{0: 1}, {0: 2}]
