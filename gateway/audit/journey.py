"""Reading the audit trail back: the segments and records on `yrdx.audit`, and one message's journey through them.

`read_trail` is the one reader of the topic for the auditors' tools: every record of `yrdx.audit` in topic order,
read from the beginning to its end as it is when the call starts with gateway.kafka.reader (outside any consumer
group: nothing is committed, no gateway is disturbed); `model.parse_values` turns them into segments.
`flatten_segments` flattens those segments into their records as written (for chain checks);
`read_audit_records` reads the topic message by message (model.all_entries: each entry of a batch record of trail
format 3 as a record of its own, with its position `entry`), for the tools that look for a message. `journey` is
pure: it picks the records of one message across all regions, entry by entry, in time order. `yrdx demo` prints
such a journey; `yrdx audit trace` orders its records the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.audit.model import AuditFormatError, AuditRecord, all_entries, entries, parse_segment, record_chain
from gateway.config import KafkaConfig
from gateway.kafka.reader import TopicRecord, read_topic

__all__ = ["flatten_segments", "journey", "read_audit_records", "read_trail"]

log = logging.getLogger(__name__)


def _config(kafka: KafkaConfig | str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka


async def read_trail(kafka: KafkaConfig | str, timeout_s: float = 5.0) -> list[TopicRecord]:
    """Every record on `yrdx.audit` (of the namespace of `kafka`) so far, in topic order (partition, offset: each
    region's chain lives in one partition). Raises TimeoutError when it cannot all be read within `timeout_s`."""
    cfg = _config(kafka)
    records = await read_topic(cfg, cfg.topics.audit, timeout_s)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def flatten_segments(values: Iterable[bytes]) -> list[AuditRecord]:
    """The audit records inside a sequence of `yrdx.audit` values (segments), in the order given.

    A value that is not a segment (model.parse_segment) is skipped with a warning: reading must not stop at one
    bad record (`yrdx audit verify` is where a broken chain is reported).
    """
    records: list[AuditRecord] = []
    for value in values:
        try:
            records.extend(parse_segment(value).records)
        except AuditFormatError as e:
            log.warning("skipping an audit value that is not a segment", extra={"error": str(e)})
    return records


async def read_audit_records(kafka: KafkaConfig | str, timeout_s: float = 5.0) -> list[AuditRecord]:
    """Every audit record on `yrdx.audit` (of the namespace of `kafka`) so far, message by message: `{seq, region,
    message_id, correlation_id, stage, at, envelope_sha256, detail, prev_hash, hash}` (and `entry` for an entry of
    a batch record), per region in chain order."""
    return all_entries(flatten_segments(r.value for r in await read_trail(kafka, timeout_s)))


def _order(record: Mapping[str, Any]) -> tuple[str, str, int, int]:
    seq, entry = record.get("seq"), record.get("entry")
    return (str(record.get("at", "")), record_chain(record), seq if isinstance(seq, int) else 0,
            entry if isinstance(entry, int) else -1)


def journey(
    records: Sequence[Mapping[str, Any]],
    message_id: str | None = None,
    *,
    message_ids: Iterable[str] = (),
    follow_receipts: bool = True,
) -> list[AuditRecord]:
    """The records of one message (or of several) sorted by `at`, then region, then seq, then entry.

    `records` may be records as written or already message by message: a batch record is read entry by entry
    (model.entries), so a message's record there is its entry. `message_id` and `message_ids` name the messages;
    with neither, every record is returned, sorted. With
    `follow_receipts`, the records of the signed receipts sent for those messages are included too (the
    receipt's own `received` record at the origin carries the receipt's id, named in the `receipt_sent`
    record's detail), so the journey runs from `accepted` at the origin to `receipt_received` back there.
    `at` is RFC 3339 in UTC with milliseconds (as every gateway writes it), so it sorts as text.
    """
    views = [e for r in records for e in entries(dict(r))]  # copies: the caller's records stay as they are
    wanted = set(message_ids)
    if message_id is not None:
        wanted.add(message_id)
    if not wanted:
        return sorted(views, key=_order)
    if follow_receipts:
        wanted |= {
            str(r["detail"]["receipt"])
            for r in views
            if r.get("message_id") in wanted
            and isinstance(r.get("detail"), dict)
            and "receipt" in r["detail"]
        }
    return sorted((r for r in views if r.get("message_id") in wanted), key=_order)
