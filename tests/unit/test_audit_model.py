"""The audit trail's data model (gateway.audit.model): record hashes, parsing segments, the run a checkpoint signs,
and checkpoint signatures. Pure functions, real keys (the test PKI of test_audit_verify)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit.model import (
    GENESIS,
    ORIGIN_STAGES,
    RECORD_FIELDS,
    STAGES,
    AuditFormatError,
    Checkpoint,
    NotASegment,
    Segment,
    checkpoint_bytes,
    checkpoint_fault,
    checkpoint_time,
    entries,
    parse_segment,
    parse_values,
    record_hash,
    segment_break,
    segment_fault,
)
from gateway.crypto.trust import TrustStore
from tests.unit.test_audit_verify import World, pki, signer_of, trust

__all__ = ["pki", "trust"]  # the fixtures of test_audit_verify


def record(seq: int, prev: str, region: str = "SH", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"seq": seq, "region": region, "message_id": "", "correlation_id": "", "stage": "checkpoint",
                            "at": "2026-11-23T10:00:00.000Z", "envelope_sha256": None, "detail": {}, "prev_hash": prev,
                            **fields}
    body["hash"] = record_hash(prev, body)
    return body


def chain(n: int, region: str = "SH") -> list[dict[str, Any]]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        out.append(record(seq, prev, region))
        prev = out[-1]["hash"]
    return out


def segment(records: list[dict[str, Any]], region: str = "SH", jws: str = "x..y") -> Segment:
    last = records[-1]
    return Segment(region, records, Checkpoint(region, last["seq"], last["hash"], jws))


def test_a_record_hash_covers_the_previous_hash_and_every_other_field_in_key_order() -> None:
    r = record(1, GENESIS)
    assert set(r) == {*RECORD_FIELDS, "hash"}
    assert record_hash(GENESIS, dict(reversed(list(r.items())))) == r["hash"]  # key order and `hash` do not count
    assert record_hash("1" * 64, r) != r["hash"]
    assert record_hash(GENESIS, {**r, "detail": {"x": 1}}) != r["hash"]
    assert checkpoint_bytes("SH", 3, "ab") == b'{"hash":"ab","region":"SH","seq":3}'
    assert ORIGIN_STAGES <= STAGES


def test_parse_segment_takes_what_the_gateways_write_and_names_what_is_wrong() -> None:
    records = chain(2)
    value = orjson.dumps(segment(records).to_json())
    seg = parse_segment(value, offset=7)
    assert (seg.region, seg.records, seg.offset) == ("SH", records, 7)
    assert seg.checkpoint == Checkpoint("SH", 2, records[-1]["hash"], "x..y")
    assert orjson.dumps(seg.to_json()) == value
    for bad, why in [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (orjson.dumps({"region": "SH", "records": [], "checkpoint": {}}), "non-empty records list"),
        (orjson.dumps({**orjson.loads(value), "records": [{"seq": 1}]}), "lacks one of the record fields"),
        (orjson.dumps({**orjson.loads(value), "checkpoint": {"seq": "2", "hash": "h", "jws": "j"}}),
         "checkpoint needs seq, hash and jws"),
    ]:
        with pytest.raises(AuditFormatError, match=why):
            parse_segment(bad)


def batch(seq: int, prev: str, *ids: str, stage: str = "delivered") -> dict[str, Any]:
    return record(seq, prev, stage=stage, entries=[[i, f"c-{i}", i[-1] * 64, {"platform": "p"}] for i in ids])


def test_a_batch_record_reads_as_one_record_per_message_and_is_format_3() -> None:
    first = batch(1, GENESIS, "m-1", "m-2")
    records = [first, record(2, first["hash"])]
    seg = segment(records)
    value = orjson.dumps(seg.to_json())
    assert orjson.loads(value)["format"] == 3 and "chain" not in orjson.loads(value)
    parsed = parse_segment(value)
    assert (parsed.chain, parsed.format, parsed.records) == ("SH", 3, records)
    assert segment_break(parsed) is None
    one, two, heartbeat = parsed.entries()
    assert (one["message_id"], one["correlation_id"], one["envelope_sha256"], one["entry"]) == ("m-1", "c-m-1",
                                                                                              "1" * 64, 0)
    assert (two["message_id"], two["entry"], two["seq"], two["hash"]) == ("m-2", 1, 1, first["hash"])
    assert "entries" not in one and heartbeat is parsed.records[1] and entries(records[1]) == [records[1]]
    # A replica's chain in format 3 names its chain as format 2 did.
    replica = parse_segment(orjson.dumps({**seg.to_json(), "chain": "SH/sh-0"}))
    assert replica.chain == "SH/sh-0"


def test_parse_segment_refuses_malformed_batch_records() -> None:
    good = orjson.loads(orjson.dumps(segment([batch(1, GENESIS, "m-1")]).to_json()))
    entry = good["records"][0]["entries"][0]
    for records, why in [
        ([{**good["records"][0], "entries": []}], "non-empty entries list"),
        ([{**good["records"][0], "entries": [entry[:3]]}], "is not \\[message_id"),
        ([{**good["records"][0], "entries": [["", *entry[1:]]]}], "is not \\[message_id"),
        ([{**good["records"][0], "entries": [[*entry[:3], "detail"]]}], "is not \\[message_id"),
        ([{**good["records"][0], "message_id": "m-9"}], "names its messages only in its entries"),
        ([{**good["records"][0], "detail": {"platform": "p"}}], "names its messages only in its entries"),
    ]:
        with pytest.raises(AuditFormatError, match=why):
            parse_segment(orjson.dumps({**good, "records": records}))
    for fmt, why in [(None, "batch record in a segment of format 1"), (2, "format 2 needs the chain"),
                     (4, "unknown trail format 4"), (True, "unknown trail format True")]:
        doc = {k: v for k, v in good.items() if k != "format"} | ({} if fmt is None else {"format": fmt})
        with pytest.raises(AuditFormatError, match=why):
            parse_segment(orjson.dumps(doc))
    with pytest.raises(AuditFormatError, match="not a chain id"):
        parse_segment(orjson.dumps({**good, "chain": "SH"}))  # a region's one chain names no chain


def test_parse_values_keeps_the_segments_and_says_which_values_are_not() -> None:
    good = orjson.dumps(segment(chain(1)).to_json())
    segments, bad = parse_values([(b"SH", good, 0), (b"JS", b"junk", 1), (None, b"{}", 2)])
    assert [s.offset for s in segments] == [0]
    assert [(b.region, b.offset) for b in bad] == [("JS", 1), ("?", 2)]
    assert bad[0] == NotASegment(b"JS", 1, bad[0].error) and bad[0].error.startswith("segment is not JSON")


def test_segment_break_names_why_records_are_not_the_run_their_checkpoint_signs() -> None:
    records = chain(3)
    assert segment_break(segment(records)) is None
    cases = [
        ([{**records[0], "seq": "1"}, *records[1:]], "malformed seq '1'"),
        ([record(1, GENESIS, "JS"), *records[1:]], "record 1 names region 'JS' in a segment of SH"),
        ([{**records[0], "detail": {"edited": True}}, *records[1:]], "record 1 does not match its hash"),
        ([records[0], records[2]], "record 3 does not follow record 1"),
    ]
    for changed, why in cases:
        assert why in (segment_break(Segment("SH", changed, segment(records).checkpoint)) or "")
    short = Segment("SH", records[:2], segment(records).checkpoint)
    assert segment_break(short) == "the checkpoint names record 3, not the segment's last one"


def test_a_checkpoint_holds_only_signed_by_its_regions_trusted_certificate(pki: Any, trust: TrustStore) -> None:
    w = World(pki)
    js = w.gw["JS"]
    js.append("checkpoint")
    seg = js.flush()
    assert segment_fault(seg, trust) is None
    cp = seg.checkpoint
    at = checkpoint_time(seg)
    assert at == dt.datetime.fromisoformat(seg.records[-1]["at"].replace("Z", "+00:00"))
    as_zj = Checkpoint("ZJ", cp.seq, cp.hash, cp.jws)
    assert checkpoint_fault(as_zj, trust, at) == "checkpoint of ZJ signed by a certificate of JS"
    other = Checkpoint("JS", cp.seq, "0" * 64, cp.jws)
    assert checkpoint_fault(other, trust, at) == "checkpoint signature does not verify"
    assert (checkpoint_fault(Checkpoint("JS", 1, "h", "not a jws"), trust, at) or "").startswith(
        "checkpoint signer not trusted: ")
    resigned = Checkpoint("JS", cp.seq, cp.hash, signer_of(pki, "JS").sign(checkpoint_bytes("JS", cp.seq, cp.hash)))
    assert checkpoint_fault(resigned, trust, at) is None


def test_checkpoint_time_without_a_timestamp_is_now() -> None:
    records = [{**r, "at": "not a time"} for r in chain(1)]
    before = dt.datetime.now(dt.UTC)
    assert before <= checkpoint_time(segment(records)) <= dt.datetime.now(dt.UTC)


def test_the_readmes_worked_example_hashes_as_it_says() -> None:
    """README "Provenance: the audit trail", Batch records: both records and their hashes, recomputed."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("Worked example: the same `delivered` step"):]
    prev = re.search(r"whose hash is\s+`([0-9a-f]{64})`", section)
    blocks = re.findall(r"```json\n\s*(\{.*?\})\n\s*```\n\s*hash `([0-9a-f]{64})`", section, re.S)
    assert prev is not None and len(blocks) == 2
    (single, single_hash), (batched, batch_hash) = blocks
    records = [orjson.loads(single), orjson.loads(batched)]
    assert record_hash(prev[1], records[0]) == single_hash and record_hash(prev[1], records[1]) == batch_hash
    views = entries(records[1])
    assert [v["message_id"] for v in views] == [records[0]["message_id"], views[1]["message_id"]]
    assert {k: v for k, v in views[0].items() if k != "entry"} == {**records[0], "seq": 41}
