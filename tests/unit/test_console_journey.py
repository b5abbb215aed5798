"""A trace drawn as a journey (gateway/console/trail.py: journey_view, letter_status) and the letters a replay
request picks (gateway/console/dlq.py: choose): pure functions over records shaped as the audit index holds them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.console.dlq import SelectionError, choose
from gateway.console.trail import journey_view, letter_status
from gateway.kafka.reader import TopicRecord
from gateway.relay.replay import dead_letters
from gateway.wire import headers

MSG, RECEIPT = "0190a0b1-0000-7000-8000-00000000aaaa", "0190a0b1-0000-7000-8000-00000000bbbb"


def rec(region: str, seq: int, stage: str, mid: str, ms: int, **detail: Any) -> dict[str, Any]:
    return {"seq": seq, "region": region, "message_id": mid, "correlation_id": "conv", "stage": stage,
            "at": f"2026-11-23T15:00:00.{ms:03d}Z", "envelope_sha256": "e" * 64, "detail": detail,
            "prev_hash": "0" * 64, "hash": f"{seq:064x}"}


# AH sends to SH; SH delivers and sends a receipt; the receipt arrives back at AH (as in `yrdx audit trace`).
RECORDS = [
    rec("AH", 67, "accepted", MSG, 0), rec("AH", 68, "published", MSG, 5),
    rec("SH", 79, "received", MSG, 7), rec("SH", 80, "verified", MSG, 7, signer="thumb"),
    rec("SH", 81, "delivered", MSG, 9, platform="sh-platform", mode="webhook"),
    rec("SH", 82, "receipt_sent", MSG, 9, receipt=RECEIPT),
    rec("AH", 69, "received", RECEIPT, 17), rec("AH", 70, "verified", RECEIPT, 18),
    rec("AH", 71, "receipt_received", MSG, 18, receipt=RECEIPT),
]
DOC = {"message_id": MSG, "correlation_ids": ["conv"], "message_ids": [MSG], "receipt_ids": [RECEIPT],
       "regions": ["AH", "SH"], "signers": {MSG: "thumb"}, "records": RECORDS, "conflicts": []}


def test_the_journey_has_a_lane_per_region_origin_first_and_every_record() -> None:
    view = journey_view(DOC)
    assert view["lanes"] == ["AH", "SH"]
    assert [(r["region"], r["seq"], r["stage"]) for r in view["rows"]] == [
        (r["region"], r["seq"], r["stage"]) for r in RECORDS]
    assert [r["lane"] for r in view["rows"]] == [0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert [r["receipt"] for r in view["rows"]] == [False] * 6 + [True, True, False]
    assert view["rows"][-1]["after_ms"] == pytest.approx(18.0)
    assert view["records"] == RECORDS  # the trace document itself stays whole


def test_a_hop_from_origin_to_destination_and_the_receipt_back() -> None:
    (hop,) = journey_view(DOC)["hops"]
    assert (hop["origin"], hop["destination"], hop["outcome"], hop["reason"]) == ("AH", "SH", "delivered", None)
    assert hop["receipts"] == [RECEIPT]
    assert hop["round_trip_ms"] == pytest.approx(18.0)
    assert [(s["region"], s["stage"]) for s in hop["steps"]] == [
        ("AH", "accepted"), ("AH", "published"), ("SH", "received"), ("SH", "verified"), ("SH", "delivered"),
        ("SH", "receipt_sent"), ("AH", "receipt_received")]


def test_a_rejected_message_says_why() -> None:
    records = [*RECORDS[:4], rec("SH", 81, "rejected", MSG, 9, reason="schema_violation"),
               rec("SH", 82, "dead_lettered", MSG, 9, reason="schema_violation")]
    (hop,) = journey_view({**DOC, "records": records, "receipt_ids": []})["hops"]
    assert (hop["outcome"], hop["reason"], hop["round_trip_ms"]) == ("rejected", "schema_violation", None)
    assert [s["kind"] for s in hop["steps"]][-2:] == ["bad", "bad"]


def test_letter_status_counts_the_replays_of_that_position_only() -> None:
    records = [rec("ZJ", 5, "dead_lettered", MSG, 1), rec("ZJ", 9, "replayed", MSG, 30, of="yrdx.zj.dlq:0:4"),
               rec("ZJ", 12, "replayed", MSG, 40, of="yrdx.zj.dlq:0:7"),
               rec("ZJ", 13, "delivered", MSG, 41), rec("SH", 3, "replayed", MSG, 50, of="yrdx.zj.dlq:0:4")]
    assert letter_status("ZJ", "yrdx.zj.dlq", "0:4", MSG, records) == {
        "replays": 1, "last_replay_at": "2026-11-23T15:00:00.030Z", "delivered": True,
        "delivered_at": "2026-11-23T15:00:00.041Z"}
    assert letter_status("ZJ", "yrdx.zj.dlq", "0:8", MSG, records[:1])["replays"] == 0
    assert letter_status("ZJ", "yrdx.zj.dlq", "0:8", "", records) == {
        "replays": 0, "last_replay_at": None, "delivered": False, "delivered_at": None}


def test_a_replay_picks_by_position_or_by_reason() -> None:
    def topic_record(offset: int, reason: bytes) -> TopicRecord:
        return TopicRecord("yrdx.zj.dlq", 0, offset, None, b"{}", {headers.DLQ_REASON: reason})

    letters = dead_letters([topic_record(0, b"delivery_failed"), topic_record(1, b"expired"),
                            topic_record(2, b"delivery_failed")])
    assert [d.where for d in choose(letters, ["0:2", "0:0", "0:2"])] == ["0:2", "0:0"]
    assert [d.where for d in choose(letters, reason="delivery_failed")] == ["0:0", "0:2"]
    with pytest.raises(SelectionError, match="0:9"):
        choose(letters, ["0:0", "0:9"])
    with pytest.raises(SelectionError):
        choose(letters, reason="duplicate")
    with pytest.raises(SelectionError):
        choose(letters)
