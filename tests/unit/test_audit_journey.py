"""gateway.audit.journey: `journey` and `flatten_segments` on hand-made audit records (pure functions), and the
one reader of `yrdx.audit` (`read_trail`, `read_audit_records`) over a stand-in for the topic read. No broker.
Records of trail format 3 (batch records) are read entry by entry, each with its position `entry`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.audit import journey as journey_module
from gateway.audit.journey import flatten_segments, journey, read_audit_records, read_trail
from gateway.config import KafkaConfig
from gateway.kafka.reader import TopicRecord

MSG = "01a20000-0000-7000-8000-000000000001"
RECEIPT = "01a20000-0000-7000-8000-0000000000r1"
OTHER = "01a20000-0000-7000-8000-000000000002"


def rec(region: str, seq: int, stage: str, at: str, message_id: str = MSG, **detail: str) -> dict[str, Any]:
    return {"seq": seq, "region": region, "message_id": message_id, "correlation_id": "", "stage": stage,
            "at": f"2026-11-23T10:00:{at}Z", "envelope_sha256": "ab" * 32, "detail": detail,
            "prev_hash": "0" * 64, "hash": f"{region}{seq:062d}"}


# Shuffled on purpose: per-region chains interleave on the topic, and a reader may see them in any order.
RECORDS = [
    rec("AH", 21, "receipt_sent", "00.130", outcome="delivered", receipt=RECEIPT),
    rec("SH", 34, "receipt_received", "00.190", outcome="delivered", receipt=RECEIPT),
    rec("SH", 13, "accepted", "00.100", platform="sh-platform"),
    rec("AH", 20, "delivered", "00.130", platform="ah-platform"),
    rec("SH", 33, "received", "00.190", message_id=RECEIPT),
    rec("ZJ", 5, "accepted", "00.101", message_id=OTHER),
    rec("AH", 19, "received", "00.120"),
    rec("SH", 17, "published", "00.110", topic="yrdx.ah.inbox"),
]


def stages(records: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(r["region"], r["seq"], r["stage"]) for r in records]


def test_journey_orders_one_message_across_regions_by_time_then_region_then_seq() -> None:
    assert stages(journey(RECORDS, MSG)) == [
        ("SH", 13, "accepted"),
        ("SH", 17, "published"),
        ("AH", 19, "received"),
        ("AH", 20, "delivered"),  # same millisecond as receipt_sent: the chain order decides
        ("AH", 21, "receipt_sent"),
        ("SH", 33, "received"),  # the receipt's own arrival, found through receipt_sent's detail
        ("SH", 34, "receipt_received"),
    ]


def test_journey_without_receipts_keeps_only_the_message_id() -> None:
    got = journey(RECORDS, MSG, follow_receipts=False)
    assert {r["message_id"] for r in got} == {MSG}
    assert len(got) == 6


def test_journey_of_several_messages_and_of_everything() -> None:
    both = journey(RECORDS, message_ids=[MSG, OTHER], follow_receipts=False)
    assert ("ZJ", 5, "accepted") in stages(both) and len(both) == 7
    everything = journey(RECORDS)
    assert len(everything) == len(RECORDS)
    assert [r["at"] for r in everything] == sorted(r["at"] for r in everything)


def test_journey_of_an_unknown_message_is_empty_and_inputs_are_not_changed() -> None:
    before = orjson.dumps(RECORDS)
    assert journey(RECORDS, "no-such-id") == []
    journey(RECORDS, MSG)[0]["stage"] = "edited"
    assert orjson.dumps(RECORDS) == before


def test_ties_on_time_are_broken_by_region_then_seq() -> None:
    same = [rec("SH", 2, "published", "00.500"), rec("AH", 9, "received", "00.500"),
            rec("SH", 1, "accepted", "00.500")]
    expected = [("AH", 9, "received"), ("SH", 1, "accepted"), ("SH", 2, "published")]
    assert stages(journey(same, MSG)) == expected


SEG1 = {"region": "SH", "records": RECORDS[:2], "checkpoint": {"seq": 34, "hash": "x", "jws": "y"}}
SEG2 = {"region": "AH", "records": RECORDS[2:], "checkpoint": {"seq": 21, "hash": "x", "jws": "y"}}


def batch(region: str, seq: int, stage: str, at: str, *named: tuple[str, dict[str, str]]) -> dict[str, Any]:
    """A batch record (trail format 3) of `named` (message id, detail) entries."""
    return {**rec(region, seq, stage, at, message_id=""), "envelope_sha256": None,
            "entries": [[mid, "", "ab" * 32, detail] for mid, detail in named]}


# MSG and OTHER travel together from SH to AH: each step is one record naming both.
BATCHED = [
    batch("AH", 20, "delivered", "00.130", (OTHER, {}), (MSG, {"platform": "ah-platform"})),
    batch("SH", 13, "accepted", "00.100", (MSG, {}), (OTHER, {})),
    batch("AH", 21, "receipt_sent", "00.130", (MSG, {"receipt": RECEIPT}), (OTHER, {"receipt": "r-2"})),
    rec("SH", 33, "received", "00.190", message_id=RECEIPT),
    rec("SH", 34, "checkpoint", "00.200", message_id=""),
]


def test_journey_reads_batch_records_entry_by_entry_with_their_position() -> None:
    got = journey(BATCHED, MSG)
    assert [(r["region"], r["seq"], r.get("entry"), r["stage"]) for r in got] == [
        ("SH", 13, 0, "accepted"), ("AH", 20, 1, "delivered"), ("AH", 21, 0, "receipt_sent"),
        ("SH", 33, None, "received"),  # the receipt, found through its entry's detail
    ]
    delivered = got[1]
    assert (delivered["message_id"], delivered["detail"], delivered["hash"]) == (MSG, {"platform": "ah-platform"},
                                                                                 BATCHED[0]["hash"])
    assert "entries" not in delivered
    both = journey(BATCHED, message_ids=[MSG, OTHER], follow_receipts=False)
    assert [(r["seq"], r["entry"]) for r in both if r["seq"] == 20] == [(20, 0), (20, 1)]  # chain order
    assert journey(journey(BATCHED, MSG), MSG) == got  # entries read again stay as they are


def test_flatten_segments_reads_records_in_segment_order_and_skips_what_is_not_a_segment() -> None:
    lacking = {**SEG1, "records": [{"seq": 1}]}  # a record without the record fields: not as gateways write it
    values = [orjson.dumps(SEG1), b"not json", orjson.dumps({"records": "nope"}), orjson.dumps(lacking), b"",
              orjson.dumps(SEG2)]
    assert flatten_segments(values) == RECORDS


async def test_read_trail_reads_the_namespaced_audit_topic_in_topic_order(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, float]] = []
    on_topic = [TopicRecord("ns.yrdx.audit", p, o, b"SH", orjson.dumps(seg), {})
                for p, o, seg in ((1, 0, SEG2), (0, 1, SEG2), (0, 0, SEG1))]

    async def read_topic(kafka: KafkaConfig, topic: str, timeout_s: float) -> list[TopicRecord]:
        asked.append((topic, timeout_s))
        return on_topic

    monkeypatch.setattr(journey_module, "read_topic", read_topic)
    kafka = KafkaConfig(namespace="ns")
    assert [(r.partition, r.offset) for r in await read_trail(kafka, 7.0)] == [(0, 0), (0, 1), (1, 0)]
    assert asked == [("ns.yrdx.audit", 7.0)]
    assert await read_audit_records(kafka) == RECORDS + RECORDS[2:]  # SEG1, SEG2, SEG2 in topic order
    assert asked[-1] == ("ns.yrdx.audit", 5.0)
    # Format 3: flatten_segments gives the records as written, read_audit_records the trail message by message.
    seg3 = {"format": 3, "region": "AH", "records": BATCHED[:1], "checkpoint": {"seq": 20, "hash": "x", "jws": "y"}}
    on_topic[:] = [TopicRecord("yrdx.audit", 0, 0, b"AH", orjson.dumps(seg3), {})]
    assert flatten_segments(r.value for r in on_topic) == BATCHED[:1]
    assert [(r["message_id"], r["entry"]) for r in await read_audit_records(kafka)] == [(OTHER, 0), (MSG, 1)]
    await read_trail("127.0.0.1:1")  # a bootstrap server list: the default namespace
    assert asked[-1] == ("yrdx.audit", 5.0)
