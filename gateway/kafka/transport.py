"""The Kafka port: publish a group of records and wait for all acknowledgements; consume and commit.

Pipelines only see `Publisher.publish` and `InboxConsumer.batches/commit`, so the steps are plain code and
the integration tests run the same pipeline against the real broker.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.config import KafkaConfig

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the caller must treat the records as not sent."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    @property
    def source(self) -> str:
        """Where the record came from (topic:partition:offset): evidence in dead letters and audit records."""
        return f"{self.topic}:{self.partition}:{self.offset}"


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings shared by producer, consumer and admin client."""
    opts: dict[str, Any] = {"bootstrap_servers": cfg.bootstrap_servers, "security_protocol": cfg.security_protocol}
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=str(cfg.ssl_cafile) if cfg.ssl_cafile else None)
        if cfg.ssl_certfile:
            ctx.load_cert_chain(str(cfg.ssl_certfile), str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None)
        opts["ssl_context"] = ctx
    if cfg.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = cfg.sasl_mechanism or "SCRAM-SHA-512"
        if cfg.sasl_username_file and cfg.sasl_password_file:
            opts["sasl_plain_username"] = cfg.sasl_username_file.read_text().strip()
            opts["sasl_plain_password"] = cfg.sasl_password_file.read_text().strip()
    return opts


async def ensure_topics(
    cfg: KafkaConfig, topics: dict[str, int], configs: dict[str, dict[str, str]] | None = None, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet (name -> partitions, optional topic configs by name); existing
    ones are left alone."""
    admin = AIOKafkaAdminClient(**client_options(cfg), request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, n, 1, topic_configs=(configs or {}).get(t, {})) for t, n in topics.items()
                   if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another gateway created it at the same moment
    finally:
        await admin.close()


class Publisher:
    """An idempotent, batching producer. `publish` waits for every record's acknowledgement or fails whole."""

    def __init__(self, cfg: KafkaConfig, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._producer = AIOKafkaProducer(
            **client_options(cfg),
            enable_idempotence=True,
            acks="all",
            linger_ms=cfg.linger_ms,
            max_batch_size=256 * 1024,
            compression_type=cfg.compression,
            # A batch that cannot reach a leader in time fails instead of lingering and leaving later.
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, records: Sequence[OutRecord]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await self._producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in records
                ]
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as e:
            raise BrokerUnavailable(f"{type(e).__name__}: {e}") from e

    async def reachable(self, timeout_s: float = 3.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self._producer.client.fetch_all_metadata())
        except (TimeoutError, KafkaError, OSError):
            return False


class InboxConsumer:
    """Reads one region's inbox in a consumer group; offsets are committed only when the caller says so."""

    def __init__(self, cfg: KafkaConfig, topic: str, group_id: str, max_records: int = 500) -> None:
        self._topic = topic
        self._max_records = max_records
        self._consumer = AIOKafkaConsumer(
            topic,
            **client_options(cfg),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            max_poll_records=max_records,
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[InRecord]:
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        return [
            InRecord(
                topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                headers={k: v for k, v in (m.headers or ())},
            )
            for msgs in fetched.values()
            for m in msgs
        ]

    async def commit(self, batch: Sequence[InRecord]) -> None:
        """Commit past the highest offset of each partition in the batch."""
        offsets: dict[TopicPartition, int] = {}
        for r in batch:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
        await self._consumer.commit(offsets)
