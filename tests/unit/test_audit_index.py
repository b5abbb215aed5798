"""The audit index on hand-made segments (built with gateway.audit.model, as the gateways build them): storing
batches idempotently and atomically, and tracing a conversation across regions with its receipts. Trails of batch
records (format 3) are written by the real AuditTrail, beside the same appends one record per message (formats 1
and 2, `batch_records=False`): indexed a row per entry, they trace as the same documents, plus `entry`.

The backend behaviours below take an `index` fixture; here it is SQLite. tests/integration/
test_audit_index_postgres.py runs the very same functions against SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.audit import trail as trail_module
from gateway.audit.index import (
    AuditIndex,
    Batch,
    IndexUnavailable,
    decode_segments,
    format_trace,
    open_index,
    trace,
    trace_document,
    usage_document,
)
from gateway.audit.model import (
    GENESIS,
    Checkpoint,
    Segment,
    all_entries,
    checkpoint_bytes,
    parse_segment,
    record_hash,
)
from gateway.audit.trail import AuditTrail
from gateway.config import ConfigError, parse_config
from gateway.console.trail import journey_view
from gateway.dev.exchange import init_exchange
from gateway.kafka.memory import MemoryBroker, MemoryPublisher
from gateway.state import StateStore
from gateway.wire.regions import Topics

TOPIC = "yrdx.audit"

# One medical conversation C over three regions: AH files to SH (A), SH asks AH to settle (B), AH sends ZJ a
# clearing message (D). X is an unrelated SH -> AH message whose receipt R2 is the same envelope as B's
# (a gateway seals one receipt per origin and batch). A tampered copy of A is refused at SH.
A, B, D, X = "0190a0b1-0000-7000-8000-00000000000a", "0190a0b1-0000-7000-8000-00000000000b", \
    "0190a0b1-0000-7000-8000-00000000000d", "0190a0b1-0000-7000-8000-0000000000ff"
R1, R2, R3 = "0190a0b1-0000-7000-8000-0000000000e1", "0190a0b1-0000-7000-8000-0000000000e2", \
    "0190a0b1-0000-7000-8000-0000000000e3"
C = A
SIGNER = {"SH": "tp-sh-gateway-certificate", "AH": "tp-ah-gateway-certificate", "ZJ": "tp-zj-gateway-certificate"}
ENV = {m: f"{i:x}" * 64 for i, m in enumerate((A, B, D, X, R1, R2, R3), start=1)}


def _hop(origin: str, dest: str, msg: str, corr: str, receipt: str, *, with_receipt_arrival: bool = True
         ) -> list[tuple[str, str, str, str, dict[str, str]]]:
    """The stages of one message, as gateways append them: (region, stage, message_id, correlation_id, detail)."""
    hops = [
        (origin, "accepted", msg, corr, {"platform": f"{origin.lower()}-platform", "to": dest}),
        (origin, "published", msg, corr, {"topic": f"yrdx.{dest.lower()}.inbox"}),
        (dest, "received", msg, "", {"source": f"yrdx.{dest.lower()}.inbox:0:1"}),
        (dest, "verified", msg, corr, {"signer": SIGNER[origin], "sender": origin, "type": "medical.x"}),
        (dest, "delivered", msg, corr, {"platform": f"{dest.lower()}-platform", "mode": "inbox"}),
        (dest, "receipt_sent", msg, corr, {"receipt": receipt, "outcome": "delivered"}),
    ]
    if with_receipt_arrival:
        hops += [
            (origin, "received", receipt, "", {"source": f"yrdx.{origin.lower()}.inbox:0:2"}),
            (origin, "verified", receipt, receipt, {"signer": SIGNER[dest], "sender": dest, "type": "yrdx.receipt"}),
        ]
    # As the gateways write it: with the correlation id of the receipt envelope, not of the message's conversation.
    hops.append((origin, "receipt_received", msg, receipt, {"receipt": receipt, "outcome": "delivered"}))
    return hops


TAMPERED = "yrdx.sh.inbox:0:9"  # the source of a copy of A with a changed payload: other bytes, another hash
TIMELINE = [
    *_hop("AH", "SH", A, C, R1),
    ("SH", "received", A, "", {"source": TAMPERED}),
    ("SH", "rejected", "", "", {"reason": "bad_signature", "claimed_id": A, "source": TAMPERED}),
    ("SH", "checkpoint", "", "", {}),
    *_hop("SH", "AH", X, X, R2, with_receipt_arrival=False),
    *_hop("SH", "AH", B, C, R2),
    *_hop("AH", "ZJ", D, C, R3),
]


def _at(i: int) -> str:
    return f"2026-11-23T10:00:{i // 100:02d}.{(i % 100) * 10:03d}Z"


@dataclass
class Scenario:
    """Every region's hash chain for TIMELINE, cut into segments and laid on one partition, interleaved."""

    records: list[dict[str, Any]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def build(cls, per_segment: int = 5) -> Scenario:
        chains: dict[str, list[dict[str, Any]]] = {}
        for i, (region, stage, msg, corr, detail) in enumerate(TIMELINE):
            chain = chains.setdefault(region, [])
            prev = chain[-1]["hash"] if chain else GENESIS
            body: dict[str, Any] = {
                "seq": len(chain) + 1, "region": region, "message_id": msg, "correlation_id": corr, "stage": stage,
                "at": _at(i), "envelope_sha256": "f" * 64 if detail.get("source") == TAMPERED else ENV.get(msg),
                "detail": detail, "prev_hash": prev,
            }
            body["hash"] = record_hash(prev, body)
            chain.append(body)
        values = [
            segment_value(region, chain[i:i + per_segment])
            for region, chain in chains.items()
            for i in range(0, len(chain), per_segment)
        ]
        values.sort(key=lambda v: orjson.loads(v)["records"][0]["at"])  # as they would reach the topic
        segments = [parse_segment(v, offset) for offset, v in enumerate(values)]
        return cls([r for chain in chains.values() for r in chain], segments)

    def batch(self, segments: list[Segment] | None = None) -> Batch:
        segs = self.segments if segments is None else segments
        return Batch(TOPIC, [(0, s) for s in segs], {0: max(s.offset for s in segs) + 1})

    def of(self, *message_ids: str) -> set[tuple[str, int]]:
        return {(r["region"], r["seq"]) for r in self.records if r["message_id"] in message_ids}


def fake_jws(content: bytes) -> str:
    return "test-jws-over-" + content.hex()[:16]


def segment_value(region: str, records: list[dict[str, Any]]) -> bytes:
    """The segment as a gateway writes it (format 1, or 3 when a record is a batch record), a made-up signature."""
    last = records[-1]
    cp = Checkpoint(region, last["seq"], last["hash"], fake_jws(checkpoint_bytes(region, last["seq"], last["hash"])))
    return orjson.dumps(Segment(region, records, cp).to_json())


SCENARIO = Scenario.build()


def keys(records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["region"], r["seq"]) for r in records]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[AuditIndex]:
    with open_index(tmp_path / "audit-index.sqlite") as ix:
        yield ix


# --- backend behaviours (also run against PostgreSQL) --------------------------------------------------------


def test_a_batch_stores_its_records_checkpoints_and_position_together(index: AuditIndex) -> None:
    stored = index.store(SCENARIO.batch())
    assert stored.new == len(SCENARIO.records) and stored.conflicts == 0
    assert index.counts() == {"records": len(SCENARIO.records), "segments": len(SCENARIO.segments), "conflicts": 0}
    assert index.positions(TOPIC) == {0: len(SCENARIO.segments)}
    assert index.positions("another.topic") == {}


def test_reindexing_the_same_segments_stores_each_record_once(index: AuditIndex) -> None:
    first, second = SCENARIO.segments[:4], SCENARIO.segments[2:]  # overlapping batches, as after a crash
    assert index.store(SCENARIO.batch(first)).new == sum(len(s.records) for s in first)
    again = index.store(SCENARIO.batch(second))
    assert again.new == sum(len(s.records) for s in SCENARIO.segments[4:]) and again.conflicts == 0
    assert index.store(SCENARIO.batch()).new == 0
    assert index.counts()["records"] == len(SCENARIO.records)
    traced = keys(trace(index, A))
    assert len(traced) == len(set(traced))


def test_a_different_record_under_a_known_seq_is_kept_apart_as_a_conflict(index: AuditIndex) -> None:
    index.store(SCENARIO.batch())
    original = SCENARIO.segments[0].records[0]
    forged = {**original, "detail": {**original["detail"], "platform": "someone-else"}}
    forged["hash"] = record_hash(forged["prev_hash"], forged)
    seg = parse_segment(segment_value(forged["region"], [forged]), offset=99)
    stored = index.store(Batch(TOPIC, [(0, seg)], {0: 100}))
    assert stored.new == 0 and stored.conflicts == 1
    assert index.counts()["conflicts"] == 1
    kept = next(r for r in trace(index, A) if (r["region"], r["seq"]) == (original["region"], original["seq"]))
    assert kept["hash"] == original["hash"]  # the first record indexed stays; the other is there for verify


def test_a_batch_that_fails_midway_leaves_neither_records_nor_position(index: AuditIndex) -> None:
    # The position is written last, after the records: an offset no column can hold fails the transaction there.
    broken = Batch(TOPIC, [(0, s) for s in SCENARIO.segments], {0: 2**70})
    with pytest.raises(Exception):  # noqa: B017 (sqlite3 and psycopg raise their own types)
        index.store(broken)
    assert index.counts() == {"records": 0, "segments": 0, "conflicts": 0}
    assert index.positions(TOPIC) == {}
    assert index.store(SCENARIO.batch()).new == len(SCENARIO.records)  # and the index is still usable


def test_the_stored_position_never_moves_back(index: AuditIndex) -> None:
    index.store(SCENARIO.batch(SCENARIO.segments[5:]))
    index.store(SCENARIO.batch(SCENARIO.segments[:2]))
    assert index.positions(TOPIC) == {0: len(SCENARIO.segments)}


def test_trace_gathers_the_conversation_its_receipts_and_claimed_copies(index: AuditIndex) -> None:
    index.store(SCENARIO.batch())
    got = set(keys(trace(index, A)))
    assert got >= SCENARIO.of(A, B, D, R1, R2, R3)  # every hop of all three messages and of their receipts
    rejected = next(r for r in SCENARIO.records if r["stage"] == "rejected")
    assert (rejected["region"], rejected["seq"]) in got  # the tampered copy that claimed A's id
    assert not got & SCENARIO.of(X)  # X shares receipt R2 with B, but not the conversation
    assert not any(r["stage"] == "checkpoint" for r in trace(index, A))
    assert {r["region"] for r in trace(index, A)} == {"AH", "SH", "ZJ"}


def test_trace_is_the_same_from_any_message_of_the_conversation_or_its_receipts(index: AuditIndex) -> None:
    index.store(SCENARIO.batch())
    whole = keys(trace(index, A))
    assert keys(trace(index, B)) == whole
    assert keys(trace(index, D)) == whole
    assert keys(trace(index, R1)) == whole  # a receipt leads back to the messages it answers
    assert set(keys(trace(index, X))) == SCENARIO.of(X, R2)  # X's own, and its shared receipt's arrival


def test_trace_orders_records_by_time_then_region_then_seq(index: AuditIndex) -> None:
    index.store(SCENARIO.batch(list(reversed(SCENARIO.segments))))
    got = trace(index, A)
    assert [(r["at"], r["region"], r["seq"]) for r in got] == sorted((r["at"], r["region"], r["seq"]) for r in got)
    assert got[0]["stage"] == "accepted" and got[0]["message_id"] == A and got[0]["region"] == "AH"
    assert got[-1]["stage"] == "receipt_received" and got[-1]["message_id"] == D
    assert got[0] == next(r for r in SCENARIO.records if (r["region"], r["seq"]) == ("AH", 1))  # exactly as written


def test_an_unknown_message_has_no_trace(index: AuditIndex) -> None:
    assert trace(index, A) == [] and trace_document(index, A) is None
    index.store(SCENARIO.batch())
    assert trace(index, "0190a0b1-0000-7000-8000-000000000404") == []
    assert trace(index, "") == []  # checkpoints and unverifiable records carry no id: they form no conversation


def test_trace_document_names_messages_receipts_and_signers(index: AuditIndex) -> None:
    index.store(SCENARIO.batch())
    doc = trace_document(index, B)
    assert doc is not None
    assert doc["message_id"] == B and doc["correlation_ids"] == [C]
    assert doc["message_ids"] == [A, B, D] and doc["receipt_ids"] == [R1, R2, R3]
    assert doc["regions"] == ["AH", "SH", "ZJ"]
    assert doc["signers"] == {A: SIGNER["AH"], B: SIGNER["SH"], D: SIGNER["AH"],
                              R1: SIGNER["SH"], R2: SIGNER["AH"], R3: SIGNER["ZJ"]}
    assert doc["records"] == trace(index, B)
    assert orjson.loads(orjson.dumps(doc)) == doc  # plain JSON


# --- SQLite only: decoding, the table, the CLI and the config key ---------------------------------------------


def test_values_that_are_not_segments_are_skipped_and_counted() -> None:
    good = segment_value("SH", SCENARIO.records[:1])
    bad_seq = segment_value("SH", [{**SCENARIO.records[0], "seq": "1"}])
    nul = segment_value("SH", [{**SCENARIO.records[0], "detail": {"x": "a\x00b"}}])
    segments, skipped = decode_segments([
        (0, 0, good), (0, 1, b"not json"), (0, 2, None), (0, 3, b'{"region": "SH"}'), (0, 4, bad_seq), (0, 5, nul),
        (0, 6, good),
    ])
    assert skipped == 5 and [s.offset for _, s in segments] == [0, 6]


def line_signer(line: str) -> str:
    return line.split()[5]


def test_the_table_shows_signers_short_hashes_and_detail_codes(index: AuditIndex) -> None:
    index.store(SCENARIO.batch())
    doc = trace_document(index, A)
    assert doc is not None
    text = format_trace(doc)
    lines = text.splitlines()
    assert f"message {A}" in lines[0] and "3 messages, 3 receipts" in lines[1] and "AH, SH, ZJ" in lines[1]
    rows = lines[lines.index(next(line for line in lines if line.startswith("AT "))) + 1:]
    assert len(rows) == len(doc["records"])
    of_a = [line for line in rows if A[-12:] in line.split()[4]]
    verified_a = next(line for line in of_a if " verified " in line)
    assert SIGNER["AH"] in verified_a and "sender=AH" in verified_a
    assert all(SIGNER["AH"] in line for line in of_a if "ffffffffffff" not in line)  # accepted ... receipt_received
    tampered = next(line for line in of_a if "ffffffffffff" in line)
    assert line_signer(tampered) == "-"  # the changed copy was signed by no one
    first = doc["records"][0]
    assert first["hash"][:12] in rows[0] and first["envelope_sha256"][:12] in rows[0] and "accepted" in rows[0]
    assert f"receipt={R1[-12:]}" in text and "reason=bad_signature" in text


def test_the_audit_index_config_key_takes_a_path_or_a_dsn(tmp_path: Path) -> None:
    ex = init_exchange(tmp_path, base_port=0)
    path = ex.config_path("AH")
    doc = yaml.safe_load(path.read_text())

    def parsed(**extra: Any) -> str:
        return parse_config({**doc, **extra}, tmp_path).audit_index

    assert parsed() == str(tmp_path / "var" / "ah" / "audit-index.sqlite")
    assert parsed(audit_index="idx/a.sqlite") == str((tmp_path / "idx" / "a.sqlite").resolve())
    assert parsed(audit_index="postgresql://auditor@10.0.0.5/yrdx") == "postgresql://auditor@10.0.0.5/yrdx"
    for bad in ("", 7, "mysql://h/db"):
        with pytest.raises(ConfigError, match="^audit_index: "):
            parsed(audit_index=bad)


def test_an_index_that_cannot_be_opened_says_where(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(IndexUnavailable, match="a-file"):
        open_index(tmp_path / "a-file" / "audit-index.sqlite")
    with pytest.raises(IndexUnavailable, match=r"postgresql://auditor:\*\*\*@127\.0\.0\.1:1/yrdx"):
        open_index("postgresql://auditor:secret@127.0.0.1:1/yrdx")  # nothing listens on port 1; no password shown


# --- usage: who used a holder's data (GET /v1/usage) ---------------------------------------------------------

HOLDER, OTHER = "1d" * 32, "2e" * 32
USES = [  # (region, stage, message_id, detail): SH is the holder's region
    ("SH", "verified", A, {"type": "license.fetch.request", "sender": "JS", "subject": HOLDER,
                           "use_cause": "gov_service", "operator_id": "JS-OP-0001", "operator_role": "clerk"}),
    ("SH", "delivered", A, {"subject": HOLDER}),  # not a verification: not listed twice
    ("SH", "verified", B, {"type": "license.fetch.request", "sender": "ZJ", "subject": OTHER, "use_cause": "x"}),
    ("JS", "accepted", A, {"subject": HOLDER, "use_cause": "gov_service"}),  # the sender's trail, not SH's
    ("SH", "verified", D, {"type": "identity.verify.request", "sender": "AH", "subject": HOLDER,
                           "use_cause": "identity_check", "operator_id": "AH-OP-9", "operator_role": "officer",
                           "operator_department": "AH-GA"}),
]


def usage_batch() -> Batch:
    chains: dict[str, list[dict[str, Any]]] = {}
    for i, (region, stage, msg, detail) in enumerate(USES):
        chain = chains.setdefault(region, [])
        prev = chain[-1]["hash"] if chain else GENESIS
        body: dict[str, Any] = {"seq": len(chain) + 1, "region": region, "message_id": msg, "correlation_id": msg,
                                "stage": stage, "at": _at(i), "envelope_sha256": ENV[msg], "detail": detail,
                                "prev_hash": prev}
        body["hash"] = record_hash(prev, body)
        chain.append(body)
    segments = [parse_segment(segment_value(r, chain), offset) for offset, (r, chain) in enumerate(chains.items())]
    return Batch("usage.audit", [(0, s) for s in segments], {0: len(segments)})


def test_usage_lists_the_verified_records_of_the_subjects_in_the_region(index: AuditIndex) -> None:
    index.store(usage_batch())
    doc = usage_document(index, "SH", [HOLDER])
    assert doc["region"] == "SH" and doc["subjects"] == [HOLDER]
    assert [(u["message_id"], u["from"], u["use_cause"], u["operator"]) for u in doc["uses"]] == [
        (A, "JS", "gov_service", {"id": "JS-OP-0001", "role": "clerk"}),
        (D, "AH", "identity_check", {"id": "AH-OP-9", "role": "officer", "department": "AH-GA"}),
    ]
    assert [u["message_id"] for u in usage_document(index, "SH", [HOLDER, OTHER])["uses"]] == [A, B, D]
    assert usage_document(index, "JS", [HOLDER])["uses"] == []
    assert usage_document(index, "SH", ["3f" * 32])["uses"] == []


# --- trail format 3: batch records, written by the real AuditTrail -------------------------------------------

M1, M2, M3 = "0190a0b1-0000-7000-8000-0000000000c1", "0190a0b1-0000-7000-8000-0000000000c2", \
    "0190a0b1-0000-7000-8000-0000000000c3"
RECEIPT, GROUP = "0190a0b1-0000-7000-8000-0000000000ce", "0190a0b1-0000-7000-8000-0000000000c0"
GROUPED = (M1, M2, M3)
# What the gateways append for one ingress group of three messages AH -> SH, a step at a time (each step ends
# with durable(): one segment): (region, [(stage, message_id, correlation_id, detail) for each append]).
Step = tuple[str, list[tuple[str, str, str, dict[str, str]]]]
BATCHED: list[Step] = [
    ("AH", [*[("accepted", m, GROUP, {"platform": "ah-platform", "to": "SH"}) for m in GROUPED],
            *[("published", m, GROUP, {"topic": "yrdx.sh.inbox"}) for m in GROUPED]]),
    ("SH", [*[("received", m, "", {"source": f"yrdx.sh.inbox:0:{i}"}) for i, m in enumerate(GROUPED)],
            *[("verified", m, GROUP, {"signer": SIGNER["AH"], "sender": "AH", "type": "medical.x", "subject": HOLDER})
              for m in GROUPED],
            *[("delivered", m, GROUP, {"platform": "sh-platform", "mode": "inbox"}) for m in GROUPED],
            *[("receipt_sent", m, GROUP, {"receipt": RECEIPT, "outcome": "delivered"}) for m in GROUPED]]),
    ("AH", [("received", RECEIPT, "", {"source": "yrdx.ah.inbox:0:1"}),
            ("verified", RECEIPT, RECEIPT, {"signer": SIGNER["SH"], "sender": "SH", "type": "yrdx.receipt"}),
            *[("receipt_received", m, RECEIPT, {"receipt": RECEIPT, "outcome": "delivered"}) for m in GROUPED]]),
]
ENTRIES = sum(len(appends) for _, appends in BATCHED)
TRAIL_TOPICS = Topics("t")


class FakeSigner:
    """Checkpoints signed by no one: the index checks no signature without a trust store."""

    def sign(self, content: bytes) -> str:
        return fake_jws(content)


@pytest.fixture
def ticking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record times a millisecond apart, one tick per record: causal order is time order in every format."""
    ticks = itertools.count()
    monkeypatch.setattr(trail_module, "utc_timestamp", lambda *_: _at(next(ticks)))


async def written(root: Path, steps: Sequence[Step] = BATCHED, per_message: Collection[str] = ()) -> list[Segment]:
    """`steps` through each region's AuditTrail (the regions in `per_message` with batch_records=False), as the
    segments land on the audit topic."""
    broker, trails = MemoryBroker(partitions=1), {}
    for region, appends in steps:
        if region not in trails:
            trails[region] = AuditTrail(region, FakeSigner(), StateStore(root / f"{region}.sqlite"),  # type: ignore[arg-type]
                                        MemoryPublisher(broker), topics=TRAIL_TOPICS,
                                        batch_records=region not in per_message)
        for stage, msg, corr, detail in appends:
            trails[region].append(stage, msg, ENV.get(msg, "c" * 64), corr, **detail)
        await trails[region].durable()
    return [parse_segment(r.value, offset) for offset, r in enumerate(broker.records(TRAIL_TOPICS.audit))]


def topic_batch(segments: Sequence[Segment]) -> Batch:
    return Batch(TOPIC, [(0, s) for s in segments], {0: len(segments)})


def unordered(records: Sequence[dict[str, Any]]) -> list[bytes]:
    """Records to compare whatever their order and their keys' (PostgreSQL's jsonb orders keys its own way)."""
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)


def message_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A trace document without where its records sit in their chains and when (what batching changes)."""
    place = ("seq", "entry", "at", "prev_hash", "hash")
    return {**doc, "records": [{k: v for k, v in r.items() if k not in place} for r in doc["records"]]}


async def test_a_batched_trail_is_indexed_a_row_per_entry_and_traced_message_by_message(
        index: AuditIndex, tmp_path: Path, ticking: None) -> None:
    segments = await written(tmp_path)
    raw = [r for s in segments for r in s.records]
    assert {s.format for s in segments} == {3} and len(raw) == 9  # AH: 2 + 3 batch records, SH: 4
    stored = index.store(topic_batch(segments))
    assert (stored.new, stored.conflicts, stored.read) == (ENTRIES, 0, ENTRIES)
    assert index.counts() == {"records": ENTRIES, "segments": 3, "conflicts": 0}
    got = trace(index, M2)
    assert len(got) == ENTRIES
    assert unordered(got) == unordered(all_entries(raw))  # the entries exactly as written
    # In chain order: time, region, seq, then the entry's position.
    assert [(r["at"], r["region"], r["seq"], r["entry"]) for r in got] == sorted(
        (r["at"], r["region"], r["seq"], r["entry"]) for r in got)
    accepted = [r for r in got if r["stage"] == "accepted"]
    assert [(r["message_id"], r["seq"], r["entry"]) for r in accepted] == [(M1, 1, 0), (M2, 1, 1), (M3, 1, 2)]
    assert len({r["hash"] for r in accepted}) == 1  # one batch record covers them
    for other in (M1, M3, RECEIPT):
        assert trace(index, other) == got
    assert index.store(topic_batch(segments)).new == 0  # read again: nothing doubled
    assert index.counts()["records"] == ENTRIES


async def test_a_batched_trail_traces_as_the_same_document_as_one_record_per_message(
        tmp_path: Path, ticking: None) -> None:
    docs = {}
    for name, per_message in (("format 3", ()), ("format 1", ("AH", "SH"))):
        segments = await written(tmp_path / name, per_message=per_message)
        assert {s.format for s in segments} == ({1} if per_message else {3})
        with open_index(tmp_path / name / "audit-index.sqlite") as ix:
            ix.store(topic_batch(segments))
            docs[name] = trace_document(ix, M1)
    batched, single = docs["format 3"], docs["format 1"]
    assert batched is not None and single is not None
    assert message_view(batched) == message_view(single)
    assert batched["message_ids"] == list(GROUPED) and batched["receipt_ids"] == [RECEIPT]
    assert batched["signers"] == {**dict.fromkeys(GROUPED, SIGNER["AH"]), RECEIPT: SIGNER["SH"]}
    assert all("entry" in r for r in batched["records"]) and not any("entry" in r for r in single["records"])
    assert orjson.loads(orjson.dumps(batched)) == batched  # plain JSON
    # The console's page draws the same rows, a batch record's entry with its position.
    rows = journey_view(batched)["rows"]
    assert [(r["seq"], r["entry"]) for r in rows] == [(r["seq"], r["entry"]) for r in batched["records"]]
    assert {r["entry"] for r in journey_view(single)["rows"]} == {None}


async def test_a_mixed_topic_indexes_and_traces_a_batched_chain_beside_one_of_a_record_per_message(
        index: AuditIndex, tmp_path: Path, ticking: None) -> None:
    segments = await written(tmp_path, per_message=("SH",))  # SH's gateway not yet upgraded: format 1
    assert [s.format for s in segments] == [3, 1, 3]
    assert index.store(topic_batch(segments)).new == ENTRIES
    got = trace(index, M3)
    assert {r["region"] for r in got if "entry" in r} == {"AH"}
    assert {r["region"] for r in got if "entry" not in r} == {"SH"}
    assert unordered(got) == unordered(all_entries(r for s in segments for r in s.records))
    sh = [r for r in got if r["region"] == "SH"]
    assert [r["seq"] for r in sh] == list(range(1, 13))  # a record per message, as before


async def test_the_table_shows_a_batch_record_s_entries_at_seq_dot_entry(index: AuditIndex, tmp_path: Path,
                                                                         ticking: None) -> None:
    index.store(topic_batch(await written(tmp_path, per_message=("SH",))))
    doc = trace_document(index, M1)
    assert doc is not None
    lines = format_trace(doc).splitlines()
    rows = lines[lines.index(next(line for line in lines if line.startswith("AT "))) + 1:]
    cells = [line.split()[1:4] for line in rows]
    assert ["AH", "1.2", "accepted"] in cells and ["AH", "5.0", "receipt_received"] in cells
    assert ["SH", "12", "receipt_sent"] in cells  # a whole record: its seq alone


async def test_usage_reads_the_entries_of_batched_verified_records(index: AuditIndex, tmp_path: Path,
                                                                   ticking: None) -> None:
    index.store(topic_batch(await written(tmp_path)))
    doc = usage_document(index, "SH", [HOLDER])
    assert [(u["message_id"], u["from"], u["type"]) for u in doc["uses"]] == [(m, "AH", "medical.x") for m in GROUPED]
    assert usage_document(index, "AH", [HOLDER])["uses"] == []


async def test_usage_reads_every_replica_chain_of_the_region(index: AuditIndex, tmp_path: Path,
                                                             ticking: None) -> None:
    """A region running replicas indexes its records under chain ids (`SH/sh-a`): usage asks for the region."""
    broker = MemoryBroker(partitions=1)
    for instance, msg in (("sh-a", M1), ("sh-b", M2)):
        trail = AuditTrail("SH", FakeSigner(), StateStore(tmp_path / f"{instance}.sqlite"),  # type: ignore[arg-type]
                           MemoryPublisher(broker), topics=TRAIL_TOPICS, instance_id=instance)
        trail.append("verified", msg, "c" * 64, GROUP, signer=SIGNER["AH"], sender="AH", type="medical.x",
                     subject=HOLDER)
        await trail.durable()
    index.store(topic_batch([parse_segment(r.value, o) for o, r in enumerate(broker.records(TRAIL_TOPICS.audit))]))
    assert [u["message_id"] for u in usage_document(index, "SH", [HOLDER])["uses"]] == [M1, M2]
    assert usage_document(index, "S", [HOLDER])["uses"] == []  # a prefix of a region is not the region


async def test_another_record_under_a_batch_record_s_seq_adds_no_row_and_is_reported(
        index: AuditIndex, tmp_path: Path, ticking: None) -> None:
    """A fork whose batch record names one message more, and one with a single record at a batch record's seq:
    neither lands beside the rows of the record indexed first."""
    segments = await written(tmp_path)
    index.store(topic_batch(segments))
    accepted = segments[0].records[0]
    ghost = "0190a0b1-0000-7000-8000-0000000000c4"
    wider = {**accepted, "entries": [*accepted["entries"], [ghost, GROUP, "d" * 64, {"platform": "ah-platform"}]]}
    wider["hash"] = record_hash(wider["prev_hash"], wider)
    single = {**accepted, "message_id": ghost, "correlation_id": GROUP, "envelope_sha256": "d" * 64}
    del single["entries"]
    single["hash"] = record_hash(single["prev_hash"], single)
    forks = [parse_segment(segment_value("AH", [r]), offset) for offset, r in enumerate((wider, single), start=10)]
    stored = index.store(Batch(TOPIC, [(0, s) for s in forks], {0: 12}))
    assert (stored.new, stored.conflicts) == (0, 5)  # four entries and one record, all rewritten
    assert index.counts()["records"] == ENTRIES and index.records_with("message_id", [ghost]) == []
    doc = trace_document(index, ghost)
    assert doc is not None and doc["records"] == []
    assert [(c["kind"], c["offset"], c.get("entry"), c["record"]["message_id"]) for c in doc["conflicts"]] == [
        ("rewritten", 11, None, ghost), ("rewritten", 10, 3, ghost)]


def test_a_batch_record_with_a_bad_entry_is_skipped_not_indexed() -> None:
    entry = [M1, GROUP, "c" * 64, {"platform": "ah-platform"}]
    base = {"seq": 1, "region": "AH", "message_id": "", "correlation_id": "", "stage": "accepted",
            "at": _at(0), "envelope_sha256": None, "detail": {}, "prev_hash": GENESIS}

    def value(*listed: list[Any]) -> bytes:
        body = {**base, "entries": list(listed)}
        body["hash"] = record_hash(GENESIS, body)
        return segment_value("AH", [body])

    bad = [value([M1, GROUP, "c" * 64, {"x": "a\x00b"}]),  # NUL: PostgreSQL cannot hold it
           value([M1, GROUP, 7, {}]), value([M1, 1, None, {}]), value(["", GROUP, None, {}]), value([M1, GROUP, None]),
           value()]
    good = value(entry, [M2, GROUP, None, {}])
    segments, skipped = decode_segments([(0, 0, good), *((0, i, v) for i, v in enumerate(bad, start=1)),
                                         (0, 9, good)])
    assert skipped == len(bad) and [s.offset for _, s in segments] == [0, 9]


def test_an_index_of_the_layout_before_batch_records_is_rebuilt_from_the_topic(tmp_path: Path) -> None:
    path = tmp_path / "layout-3.sqlite"
    with closing(sqlite3.connect(path)) as db, db:  # layout 3: one row per record, keyed by (region, seq)
        db.execute("CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO audit_meta VALUES ('schema', '3')")
        db.execute("CREATE TABLE audit_records (region TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL, "
                   "PRIMARY KEY (region, seq))")
        db.execute("INSERT INTO audit_records VALUES ('AH', 1, '')")
        db.execute("CREATE TABLE audit_positions (topic TEXT NOT NULL, partition INTEGER NOT NULL, "
                   "next_offset INTEGER NOT NULL, PRIMARY KEY (topic, partition))")
        db.execute("INSERT INTO audit_positions VALUES ('yrdx.audit', 0, 99)")
    with open_index(path) as ix:
        assert ix.positions(TOPIC) == {} and ix.counts()["records"] == 0  # read again from the beginning
        assert ix.store(SCENARIO.batch()).new == len(SCENARIO.records)
    with open_index(path) as ix:  # and kept when opened again
        assert ix.positions(TOPIC) == {0: len(SCENARIO.segments)}
        assert ix.counts()["records"] == len(SCENARIO.records)
