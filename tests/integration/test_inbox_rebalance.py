"""Commit on revoke (gateway.kafka.transport.KafkaInboxConsumer) against the real broker: two consumers of one
group, as two replicas of a region. When a second replica joins while the first holds a batch, the first takes no
new batch and the group waits until that batch is committed, so the newcomer never reads it again; a batch held
past `revoke_wait_s` is abandoned instead: its late commit is refused without an error and the new owner reads
it again (the shared dedupe marks then drop it, tests/e2e/test_replicas.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaProducer

from gateway.config import KafkaConfig
from gateway.kafka.port import InRecord
from gateway.kafka.transport import KafkaInboxConsumer, ensure_topics
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


async def setup(kafka: Broker) -> tuple[KafkaConfig, str, str]:
    cfg = KafkaConfig(bootstrap_servers=kafka.bootstrap_servers)
    topic, group = f"rebalance-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(cfg, {topic: PARTITIONS})
    return cfg, topic, group


async def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.1)
    assert condition(), "the condition never held"  # type: ignore[operator]


async def test_a_batch_in_hand_is_committed_before_its_partitions_move(kafka: Broker) -> None:
    cfg, topic, group = await setup(kafka)
    await produce(cfg.bootstrap_servers, topic, 20, "old")
    first = KafkaInboxConsumer(cfg, topic, group, revoke_wait_s=60)
    second = KafkaInboxConsumer(cfg, topic, group, revoke_wait_s=60)
    await first.start()
    try:
        batch = await poll_until(first, 20)
        assert len(batch) == 20
        joining = asyncio.create_task(second.start())  # returns once the group has given it partitions
        await wait_for(lambda: first._revoking)  # the group is rebalancing; the first replica holds its batch
        await asyncio.sleep(2.0)
        assert second.assignments == 0, "the partitions moved while a batch was in hand"
        assert await first.poll(timeout_ms=100) == []  # no new batch while revoking
        await first.commit(batch)
        await joining
        assert second.assignments == 1
        await produce(cfg.bootstrap_servers, topic, 10, "new")
        got = await asyncio.gather(poll_until(first, 5, timeout=20), poll_until(second, 5, timeout=20))
        later = [r.value.decode() for batch_of in got for r in batch_of]
        assert all(v.startswith("new") for v in later), later  # nothing of the committed batch came again
    finally:
        await first.stop()
        await second.stop()


async def test_a_batch_held_past_the_wait_is_abandoned_to_the_next_owner(kafka: Broker) -> None:
    cfg, topic, group = await setup(kafka)
    await produce(cfg.bootstrap_servers, topic, 20, "old")
    first = KafkaInboxConsumer(cfg, topic, group, revoke_wait_s=1.0)
    second = KafkaInboxConsumer(cfg, topic, group, revoke_wait_s=60)
    await first.start()
    try:
        batch = await poll_until(first, 20)
        assert len(batch) == 20
        await second.start()  # returns once the group has given it partitions, after the first gave up waiting
        reread = await poll_until(second, 10, timeout=60)
        moved = {r.partition for r in reread}
        assert reread and all(r.value.startswith(b"old") for r in reread)  # the abandoned batch, read again
        await first.commit([r for r in batch if r.partition in moved])  # too late: refused, logged, no error
    finally:
        await first.stop()
        await second.stop()
