"""Reading a topic outside any consumer group: once from its beginning to its end (`read_topic`), or following it.

Nothing here joins a group or commits an offset, so no gateway's consumer is disturbed. `read_topic` reads the
records present when it is called; `TopicFollower` reads a topic from given offsets or from its end on, and
`follow_topic` wraps it for the gateway's background followers (`yrdx.checkpoints`, `yrdx.trust`), which must
not stop: a record the client library cannot decode (a header key that is not UTF-8) comes as a `TopicRecord`
with a `flaw` and the partition moves past it (transport.read_one_at_a_time, as the inbox consumer does), and a
client that fails is started again where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from gateway.config import KafkaConfig
from gateway.kafka.transport import Undecodable, client_options, read_one_at_a_time

# KafkaError, the client library's base error, is exported so that callers can tell a broker failure from a bug
# without importing aiokafka themselves.
__all__ = ["KafkaError", "TopicFollower", "TopicRecord", "follow_topic", "partitions_of", "read_topic"]

log = logging.getLogger(__name__)

_STEP_OVER_MAX = 500  # records read one at a time after a decoding failure, at most, per poll


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One Kafka record as read back, headers decoded into a mapping (the last value of a repeated key).

    `flaw` is set (and key, value and headers are empty) for a record the client library could not decode."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]
    flaw: str | None = None


def _record(m: Any) -> TopicRecord:
    if isinstance(m, Undecodable):
        return TopicRecord(m.topic, m.partition, m.offset, None, b"", {},
                           flaw=f"the client library cannot decode the record: {m.error}")
    return TopicRecord(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ()))


def _config(kafka: KafkaConfig | str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka


async def partitions_of(kafka: KafkaConfig | str, topic: str) -> list[int]:
    """The partition numbers of `topic` from fresh cluster metadata ([] when the topic does not exist)."""
    client = AIOKafkaClient(**client_options(_config(kafka)))
    try:
        await client.bootstrap()
        cluster = await client.fetch_all_metadata()
        return sorted(cluster.partitions_for_topic(topic) or ())
    finally:
        await client.close()


class TopicFollower:
    """Reads one topic's partitions outside any group, from given offsets or from their end as of `start`.

    `poll` returns the next records in offset order per partition. With `step_over` (the default), a record the
    client library cannot decode is returned as a flawed `TopicRecord` and the partition moves past it; without,
    the library's error is raised (as `read_topic` does). A follower started from the end of a topic that has no
    partitions yet looks for them again at each poll and reads those that appear from their beginning.
    """

    def __init__(self, kafka: KafkaConfig | str, topic: str, *, fetch_max_wait_ms: int = 500,
                 step_over: bool = True) -> None:
        self.topic = topic
        self._cfg = _config(kafka)
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._step_over = step_over
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}  # the offset after the last record returned (or stepped over)

    async def start(self, offsets: Mapping[int, int | None] | None = None) -> None:
        """Assign the partitions: those of `offsets`, each at its offset there (None: its beginning), or, when
        `offsets` is None, every partition of the topic at its end."""
        from_end = offsets is None
        consumer = AIOKafkaConsumer(
            **client_options(self._cfg), group_id=None, enable_auto_commit=False,
            auto_offset_reset="latest" if from_end else "earliest", fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            if offsets is None:
                await self._assign({p: None for p in await partitions_of(self._cfg, self.topic)}, from_end=True)
            else:
                await self._assign(offsets, from_end=False)
        except BaseException:
            await self.stop()
            raise

    async def _assign(self, offsets: Mapping[int, int | None], from_end: bool) -> None:
        consumer = self._require()
        tps = [TopicPartition(self.topic, p) for p in sorted(offsets)]
        if not tps:
            return
        consumer.assign(tps)
        if from_end:
            for tp in tps:
                await consumer.seek_to_end(tp)
                self._next[tp] = await consumer.position(tp)
        else:
            await self.seek(offsets)

    async def seek(self, offsets: Mapping[int, int | None]) -> None:
        """Place assigned partitions at the offsets given (None: their beginning)."""
        consumer = self._require()
        for p, at in sorted(offsets.items()):
            tp = TopicPartition(self.topic, p)
            if at is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, at)
            self._next[tp] = await consumer.position(tp)

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the follower is not started")
        return self._consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> TopicFollower:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self._next)

    def positions(self) -> dict[int, int]:
        """partition -> the next offset to read: after the last record returned (or stepped over)."""
        return {tp.partition: o for tp, o in self._next.items()}

    async def position(self, partition: int) -> int:
        """The consumer's position in `partition` (where its next fetch starts)."""
        return int(await self._require().position(TopicPartition(self.topic, partition)))

    async def end_offsets(self) -> dict[int, int]:
        """partition -> its end offset now (the offset the next record published will get)."""
        ends = await self._require().end_offsets(list(self._next))
        return {tp.partition: int(o) for tp, o in ends.items()}

    async def poll(self, timeout_ms: int = 1000, max_records: int | None = None,
                   partitions: Collection[int] | None = None) -> list[TopicRecord]:
        """The next records of the assigned partitions (or of `partitions` among them), waiting up to
        `timeout_ms` for some; [] when none came."""
        consumer = self._require()
        if not self._next:
            return await self._look_for_partitions(timeout_ms)
        tps = list(self._next) if partitions is None else [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        try:
            fetched = await consumer.getmany(*tps, timeout_ms=timeout_ms, max_records=max_records)
            got: list[Any] = [m for msgs in fetched.values() for m in msgs]
        except KafkaError:
            raise
        except Exception as e:  # the client library could not decode a record
            if not self._step_over:
                raise
            log.warning("a record could not be decoded; reading one record at a time",
                        extra={"topic": self.topic, "error": type(e).__name__})
            got = await read_one_at_a_time(consumer, {tp: self._next[tp] for tp in tps},
                                           max_records or _STEP_OVER_MAX)
        records = [_record(m) for m in got]
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            self._next[tp] = max(self._next.get(tp, 0), r.offset + 1)
        return records

    async def _look_for_partitions(self, timeout_ms: int) -> list[TopicRecord]:
        """A topic that had no partitions when the follower started: wait, then look again; the partitions
        found are read from their beginning (every record on them came after the start)."""
        await asyncio.sleep(timeout_ms / 1000)
        found = await partitions_of(self._cfg, self.topic)
        if found:
            await self._assign({p: None for p in found}, from_end=False)
        return []


async def read_topic(kafka: KafkaConfig | str, topic: str, timeout_s: float = 5.0, *,
                     step_over: bool = False) -> list[TopicRecord]:
    """Every record of `topic` from the beginning to the end offsets seen at the start.

    `kafka` is a gateway's Kafka settings or a bootstrap server list. A topic that does not exist reads as
    empty. Raises TimeoutError when the records cannot all be read within `timeout_s`. A record the client
    library cannot decode raises the library's error, or, with `step_over`, comes flawed (as from a follower).
    """
    out: list[TopicRecord] = []
    async with asyncio.timeout(timeout_s):
        found = await partitions_of(kafka, topic)
        if not found:
            return []
        follower = TopicFollower(kafka, topic, step_over=step_over)
        await follower.start({p: None for p in found})
        try:
            ends = await follower.end_offsets()
            remaining = {p for p in found if ends[p] > await follower.position(p)}
            while remaining:
                out.extend(r for r in await follower.poll(timeout_ms=200, partitions=remaining)
                           if r.offset < ends[r.partition])
                remaining = {p for p in remaining if await follower.position(p) < ends[p]}
        finally:
            await follower.stop()
    return out


async def follow_topic(kafka: KafkaConfig | str, topic: str, *, timeout_ms: int = 1000,
                       max_records: int | None = None, retry_s: float = 1.0, from_beginning: bool = False,
                       ) -> AsyncGenerator[list[TopicRecord], None]:
    """The records published on `topic` from the call on (or, `from_beginning`, all of them), in batches,
    forever: an empty batch after `timeout_ms` without any, so the caller can do periodic work between records.
    A record the client library cannot decode comes flawed (`TopicRecord.flaw`); when the client fails (a
    broker gone for long, an unexpected error), it is logged and started again after `retry_s` from where it
    stopped, so no record is skipped."""
    offsets: dict[int, int | None] | None = None  # None: from the end
    if from_beginning:
        offsets = dict.fromkeys(await partitions_of(kafka, topic))
    while True:
        follower = TopicFollower(kafka, topic)
        try:
            await follower.start(offsets)
            offsets = dict(follower.positions())
            while True:
                batch = await follower.poll(timeout_ms=timeout_ms, max_records=max_records)
                offsets = dict(follower.positions())
                yield batch
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:
            log.warning("following a topic failed; starting again where it stopped",
                        extra={"topic": topic, "error": f"{type(e).__name__}: {e}"})
        finally:
            with contextlib.suppress(Exception):
                await follower.stop()
        await asyncio.sleep(retry_s)
