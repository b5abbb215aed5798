"""Commit on revoke (gateway.kafka.transport.KafkaInboxConsumer) against the real broker: two consumers of one
group, as two replicas of a region. When a second replica joins while the first holds a batch, the first takes no
new batch and the group waits until that batch is committed, so the newcomer never reads it again; a batch held
past `revoke_wait_s` is abandoned instead: its late commit is refused without an error and the new owner reads
it again (the shared dedupe marks then drop it, tests/e2e/test_replicas.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer

from gateway.config import KafkaConfig
from gateway.kafka.port import InRecord
from gateway.kafka.transport import INBOX_COMMIT_INTERVAL_S, KafkaInboxConsumer, ensure_topics
from tests.conftest import Broker

PARTITIONS = 2


async def produce(bootstrap: str, topic: str, n: int, tag: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"{tag}-{i}".encode(), partition=i % PARTITIONS)
    finally:
        await producer.stop()


async def poll_until(consumer: KafkaInboxConsumer, n: int, timeout: float = 60.0) -> list[InRecord]:
    got: list[InRecord] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += await consumer.poll(timeout_ms=500)
    return got


@dataclass
class Replicas:
    bootstrap: str
    topic: str
    first: KafkaInboxConsumer  # started, holding `batch` (polled, not committed)
    second: KafkaInboxConsumer  # same group, not started
    batch: list[InRecord]


@contextlib.asynccontextmanager
async def first_holding_a_batch(kafka: Broker, first_wait_s: float,
                                interval: float = 0.0) -> AsyncIterator[Replicas]:
    """20 records on a topic of PARTITIONS partitions, a first replica holding all of them as its batch in hand
    (revoke wait `first_wait_s`, commits awaited or, with `interval`, in the background as egress commits) and a
    second replica of the same group, ready to start."""
    cfg = KafkaConfig(bootstrap_servers=kafka.bootstrap_servers)
    topic, group = f"rebalance-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(cfg, {topic: PARTITIONS})
    await produce(cfg.bootstrap_servers, topic, 20, "old")
    first = KafkaInboxConsumer(cfg, topic, group, revoke_wait_s=first_wait_s, commit_interval_s=interval)
    second = KafkaInboxConsumer(cfg, topic, group, revoke_wait_s=60)
    await first.start()
    try:
        batch = await poll_until(first, 20)
        assert len(batch) == 20
        yield Replicas(cfg.bootstrap_servers, topic, first, second, batch)
    finally:
        await first.stop()
        await second.stop()


async def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert condition(), "the condition never held"


@pytest.mark.parametrize("interval", [0.0, INBOX_COMMIT_INTERVAL_S])
async def test_a_batch_in_hand_is_committed_before_its_partitions_move(kafka: Broker, interval: float) -> None:
    async with first_holding_a_batch(kafka, first_wait_s=60, interval=interval) as r:
        joining = asyncio.create_task(r.second.start())  # returns once the group has given it partitions
        await wait_for(lambda: r.first._revoking)  # the group is rebalancing; the first replica holds its batch
        await asyncio.sleep(2.0)
        assert r.second.assignments == 0, "the partitions moved while a batch was in hand"
        assert await r.first.poll(timeout_ms=100) == []  # no new batch while revoking
        await r.first.commit(r.batch)
        await joining
        assert r.second.assignments == 1
        await produce(r.bootstrap, r.topic, 10, "new")
        got = await asyncio.gather(poll_until(r.first, 5, timeout=20), poll_until(r.second, 5, timeout=20))
        later = [m.value.decode() for batch in got for m in batch]
        assert all(v.startswith("new") for v in later), later  # nothing of the committed batch came again


@pytest.mark.parametrize("interval", [0.0, INBOX_COMMIT_INTERVAL_S])
async def test_a_batch_held_past_the_wait_is_abandoned_to_the_next_owner(kafka: Broker, interval: float) -> None:
    async with first_holding_a_batch(kafka, first_wait_s=1.0, interval=interval) as r:
        await r.second.start()  # returns once the group has given it partitions, after the first gave up waiting
        reread = await poll_until(r.second, 10, timeout=60)
        moved = {m.partition for m in reread}
        assert reread and all(m.value.startswith(b"old") for m in reread)  # the abandoned batch, read again
        await r.first.commit([m for m in r.batch if m.partition in moved])  # too late: refused, logged, no error
