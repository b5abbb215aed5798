"""An in-memory twin of the Kafka port for unit tests of pipeline logic: topics of partitions, offsets, headers,
commits, and a log of every publish and commit in order. Never used by integration or end-to-end tests."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.kafka.port import BrokerUnavailable, InRecord, OutRecord
from gateway.kafka.transport import next_offsets


@dataclass
class MemoryBroker:
    partitions: int = 4
    topics: dict[str, list[list[InRecord]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, partition)
    events: list[tuple[str, str]] = field(default_factory=list)  # ("publish", topic) / ("commit", topic)
    down: bool = False  # while True, publish raises BrokerUnavailable as a stopped broker would

    def append(self, r: OutRecord, partition: int | None = None) -> InRecord:
        parts = self.topics.setdefault(r.topic, [[] for _ in range(self.partitions)])
        p = partition if partition is not None else zlib.crc32(r.key or b"") % len(parts)
        rec = InRecord(r.topic, p, len(parts[p]), r.key, r.value, dict(r.headers))
        parts[p].append(rec)
        return rec

    def records(self, topic: str) -> list[InRecord]:
        return [r for part in self.topics.get(topic, []) for r in part]


class MemoryPublisher:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if self.broker.down:
            raise BrokerUnavailable("the in-memory broker is down")
        for r in records:
            self.broker.append(r)
            self.broker.events.append(("publish", r.topic))


class MemoryInboxConsumer:
    def __init__(self, broker: MemoryBroker, topic: str, group: str, max_records: int = 500) -> None:
        self.broker, self.topic, self.group, self.max_records = broker, topic, group, max_records
        self._position: dict[int, int] = defaultdict(int)
        for p in range(broker.partitions):
            self._position[p] = broker.committed.get((group, topic, p), 0)

    async def poll(self) -> list[InRecord]:
        out: list[InRecord] = []
        for p, part in enumerate(self.broker.topics.get(self.topic, [])):
            take = part[self._position[p]:self._position[p] + self.max_records - len(out)]
            self._position[p] += len(take)
            out.extend(take)
        return out

    async def commit(self, batch: Sequence[InRecord]) -> None:
        for p, offset in next_offsets(batch).items():
            self.broker.committed[(self.group, self.topic, p)] = offset
        self.broker.events.append(("commit", self.topic))

    def offsets(self) -> dict[int, tuple[int, int]]:
        return {p: (self.broker.committed.get((self.group, self.topic, p), 0), len(part))
                for p, part in enumerate(self.broker.topics.get(self.topic, []))}
