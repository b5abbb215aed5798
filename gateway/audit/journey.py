"""Reading the audit trail back (DESIGN.md section 6): the records of `yrdx.audit` and one message's journey.

`read_audit_records` reads the topic from the beginning to its end as it is when the call starts, with a
consumer outside any group (nothing is committed, no gateway is disturbed), and flattens the segments the
gateways publish into their records. `journey` is pure: it picks the records of one message across all
regions, in time order. `yrdx demo` prints such a journey; `yrdx audit trace` builds on the same two calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient

from gateway.config import KafkaConfig
from gateway.kafka.transport import client_options

__all__ = ["TopicRecord", "flatten_segments", "journey", "read_audit_records", "read_topic"]

log = logging.getLogger(__name__)

AuditRecord = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One Kafka record as read back, headers decoded into a mapping (the last value of a repeated key)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]


def _config(kafka: KafkaConfig | str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka


async def _partitions(cfg: KafkaConfig, topic: str) -> list[int]:
    """The partition numbers of `topic` from fresh cluster metadata ([] when the topic does not exist)."""
    client = AIOKafkaClient(**client_options(cfg))
    try:
        await client.bootstrap()
        cluster = await client.fetch_all_metadata()
        return sorted(cluster.partitions_for_topic(topic) or ())
    finally:
        await client.close()


async def read_topic(kafka: KafkaConfig | str, topic: str, timeout_s: float = 5.0) -> list[TopicRecord]:
    """Every record of `topic` from the beginning to the end offsets seen at the start.

    `kafka` is a gateway's Kafka settings or a bootstrap server list. A topic that does not exist reads as
    empty. Raises TimeoutError when the records cannot all be read within `timeout_s`.
    """
    cfg = _config(kafka)
    out: list[TopicRecord] = []
    async with asyncio.timeout(timeout_s):
        partitions = [TopicPartition(topic, p) for p in await _partitions(cfg, topic)]
        if not partitions:
            return []
        consumer = AIOKafkaConsumer(
            **client_options(cfg), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
            remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, messages in fetched.items():
                    out.extend(
                        TopicRecord(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ()))
                        for m in messages
                        if m.offset < ends[tp]
                    )
                remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
    return out


def flatten_segments(values: Iterable[bytes]) -> list[AuditRecord]:
    """The audit records inside a sequence of `yrdx.audit` values (segments), in the order given.

    A value that is not a segment is skipped with a warning: reading must not stop at one bad record
    (`yrdx audit verify` is where a broken chain is reported).
    """
    records: list[AuditRecord] = []
    for value in values:
        try:
            segment = orjson.loads(value)
            items = segment["records"]
            if not isinstance(items, list):
                raise TypeError("records is not a list")
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            log.warning("skipping an audit value that is not a segment", extra={"error": str(e)})
            continue
        records.extend(r for r in items if isinstance(r, dict))
    return records


async def read_audit_records(kafka: KafkaConfig | str, timeout_s: float = 5.0) -> list[AuditRecord]:
    """Every audit record on `yrdx.audit` (of the namespace of `kafka`) so far: `{seq, region, message_id, stage,
    at, envelope_sha256, detail, prev_hash, hash}`, per region in chain order."""
    cfg = _config(kafka)
    return flatten_segments(r.value for r in await read_topic(cfg, cfg.topics.audit, timeout_s))


def _order(record: Mapping[str, Any]) -> tuple[str, str, int]:
    seq = record.get("seq")
    return str(record.get("at", "")), str(record.get("region", "")), seq if isinstance(seq, int) else 0


def journey(
    records: Sequence[Mapping[str, Any]],
    message_id: str | None = None,
    *,
    message_ids: Iterable[str] = (),
    follow_receipts: bool = True,
) -> list[dict[str, Any]]:
    """The records of one message (or of several) sorted by `at`, then region, then seq.

    `message_id` and `message_ids` name the messages; with neither, every record is returned, sorted. With
    `follow_receipts`, the records of the signed receipts sent for those messages are included too (the
    receipt's own `received` record at the origin carries the receipt's id, named in the `receipt_sent`
    record's detail), so the journey runs from `accepted` at the origin to `receipt_received` back there.
    `at` is RFC 3339 in UTC with milliseconds (as every gateway writes it), so it sorts as text.
    """
    wanted = set(message_ids)
    if message_id is not None:
        wanted.add(message_id)
    if not wanted:
        return sorted((dict(r) for r in records), key=_order)
    if follow_receipts:
        wanted |= {
            str(r["detail"]["receipt"])
            for r in records
            if r.get("message_id") in wanted
            and isinstance(r.get("detail"), dict)
            and "receipt" in r["detail"]
        }
    return sorted((dict(r) for r in records if r.get("message_id") in wanted), key=_order)
