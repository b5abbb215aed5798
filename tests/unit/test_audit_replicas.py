"""A region's replicas write a set of audit chains (trail format 3 now, format 2 before batch records), written here
by the real AuditTrail over the in-memory Kafka twin with instance ids: each chain has its own head on the one state
database, the set verifies, a killed replica's chain ends with a crash_gap note and a stopped one with chain_ended,
truncation is still caught where a countersignature vouches for more, a checkpoint moved to another chain is
forged, a message sent by one replica is matched at its destination (in formats 2 and 3, and with a destination
still in format 1), an entry changed in a replica's batch record is edited, and the index and bundles keep the
chains apart. A gateway without an instance id writes format 3 without a chain id, or (batch_records=False)
format 1 exactly as before."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit import trail as trail_module
from gateway.audit.bundle import Selection, build_bundle, load_bundle, select_records, verify_bundle
from gateway.audit.countersign import Countersigner
from gateway.audit.index import AuditIndex, Batch, check_segments, open_index, trace
from gateway.audit.model import Segment, all_entries, checkpoint_bytes, parse_segment
from gateway.audit.trail import AuditTrail
from gateway.audit.verify import ENDED_AFTER, Report, verify_segments
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout
from gateway.kafka.memory import MemoryBroker, MemoryPublisher
from gateway.state import StateStore
from gateway.wire.envelope import utc_timestamp
from gateway.wire.regions import Topics
from tests.unit.test_audit_verify import pki, signer_of, trust

__all__ = ["pki", "trust"]  # the fixtures of test_audit_verify

TOPICS = Topics("t")
MSG = "01a20000-0000-7000-8000-0000000000a1"
MSG2 = "01a20000-0000-7000-8000-0000000000a2"
SHA = "e" * 64


class Clock:
    """The trail's record times, moved by the test (they start a few minutes back, inside certificate validity)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def __call__(self, when: dt.datetime | None = None) -> str:
        self.now += dt.timedelta(milliseconds=1)
        return utc_timestamp(self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock()
    monkeypatch.setattr(trail_module, "utc_timestamp", c)
    yield c


def trail(pki: PkiLayout, broker: MemoryBroker, state: StateStore, region: str,
          instance: str | None = None, batch_records: bool = True) -> AuditTrail:
    return AuditTrail(region, signer_of(pki, region), state, MemoryPublisher(broker), topics=TOPICS,
                      instance_id=instance, batch_records=batch_records)


def two_sh_replicas(pki: PkiLayout, tmp_path: Path,
                    batch_records: bool = True) -> tuple[MemoryBroker, StateStore, AuditTrail, AuditTrail]:
    """SH's replicas sh-a and sh-b on one state database and one broker."""
    broker = MemoryBroker(partitions=1)
    state = StateStore(tmp_path / "state.sqlite")
    return (broker, state, trail(pki, broker, state, "SH", "sh-a", batch_records),
            trail(pki, broker, state, "SH", "sh-b", batch_records))


def topic(broker: MemoryBroker) -> list[Segment]:
    return [parse_segment(r.value, i) for i, r in enumerate(broker.records(TOPICS.audit))]


def notes(report: Report, kind: str) -> dict[str, str]:
    return {n.region: n.detail for n in report.notes if n.kind == kind}


@pytest.mark.parametrize("version", [2, 3], ids=["format 2", "format 3"])
async def test_two_replicas_on_one_state_write_two_chains_with_their_own_heads(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path, clock: Clock, version: int
) -> None:
    broker, state, a, b = two_sh_replicas(pki, tmp_path, batch_records=version == 3)
    for t in (a, b, a, b):
        t.append("checkpoint", "", None)
        await t.durable()
    assert (a.chain, b.chain) == ("SH/sh-a", "SH/sh-b")
    assert (a.head.seq, b.head.seq) == (2, 2) and a.head.hash != b.head.hash
    assert orjson.loads(state.get("audit_head:SH/sh-a") or b"{}")["hash"] == a.head.hash
    assert state.get("audit_head") is None  # the region's one-chain key stays untouched
    raw = orjson.loads(broker.records(TOPICS.audit)[0].value)
    assert (raw["format"], raw["chain"], raw["region"]) == (version, "SH/sh-a", "SH")
    assert all(r["chain"] == "SH/sh-a" for r in raw["records"])
    # A restart of sh-a on the same state continues sh-a's chain, not sh-b's.
    again = trail(pki, broker, state, "SH", "sh-a", batch_records=version == 3)
    await again.durable()
    assert again.head.seq == 3
    resumed = topic(broker)[-1].records[-1]
    assert (resumed["stage"], resumed["detail"], resumed["prev_hash"]) == ("resumed", {"saved_seq": 2}, a.head.hash)
    report = verify_segments(topic(broker), trust)
    assert report.ok, report.faults
    assert set(report.regions) == {"SH/sh-a", "SH/sh-b"}
    assert report.regions["SH/sh-a"].head_seq == 3 and report.regions["SH/sh-b"].head_seq == 2


async def test_a_region_without_instance_id_writes_format_1_as_before(pki: PkiLayout, trust: TrustStore,
                                                                      tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    state = StateStore(tmp_path / "state.sqlite")
    js = trail(pki, broker, state, "JS", batch_records=False)
    js.append("checkpoint", "", None)
    await js.durable()
    raw = orjson.loads(broker.records(TOPICS.audit)[0].value)
    assert set(raw) == {"region", "records", "checkpoint"}
    assert "chain" not in raw["records"][0]
    assert state.get("audit_head") is not None
    seg = topic(broker)[0]
    assert seg.chain == "JS"
    one_chain = b'{"hash":"h","region":"JS","seq":1}'
    assert checkpoint_bytes("JS", 1, "h", "JS") == checkpoint_bytes("JS", 1, "h") == one_chain
    assert verify_segments([seg], trust).ok


async def test_a_region_without_instance_id_writes_format_3_without_a_chain_id(pki: PkiLayout, trust: TrustStore,
                                                                               tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    js = trail(pki, broker, StateStore(tmp_path / "state.sqlite"), "JS")
    js.append("accepted", MSG, SHA, "c-1", platform="js-platform")
    js.append("accepted", MSG2, SHA, "c-1", platform="js-platform")
    await js.durable()
    raw = orjson.loads(broker.records(TOPICS.audit)[0].value)
    assert set(raw) == {"format", "region", "records", "checkpoint"} and raw["format"] == 3
    (record,) = raw["records"]
    assert "chain" not in record and [e[0] for e in record["entries"]] == [MSG, MSG2]
    seg = topic(broker)[0]
    assert seg.chain == "JS" and seg.format == 3
    report = verify_segments([seg], trust)
    assert report.ok and (report.records, report.entries) == (1, 2), report.faults


async def test_a_killed_replica_ends_with_a_crash_gap_and_a_stopped_one_ends_cleanly(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path, clock: Clock
) -> None:
    broker = MemoryBroker(partitions=1)
    state = StateStore(tmp_path / "state.sqlite")
    killed, stopped, survivor = (trail(pki, broker, state, "SH", i) for i in ("sh-a", "sh-b", "sh-c"))
    for t in (killed, stopped, survivor):
        t.append("checkpoint", "", None)
        await t.durable()
    killed.append("checkpoint", "", None)  # appended, never published: the process is killed here
    stopped.stop()
    await stopped.durable()
    clock.now += ENDED_AFTER + dt.timedelta(seconds=5)
    survivor.append("checkpoint", "", None)
    await survivor.durable()
    report = verify_segments(topic(broker), trust)
    assert report.ok, report.faults
    assert report.counts()["truncated"] == 0
    gaps, ended = notes(report, "crash_gap"), notes(report, "chain_ended")
    assert set(gaps) == {"SH/sh-a"} and "killed" in gaps["SH/sh-a"]
    assert set(ended) == {"SH/sh-b"} and "stopped cleanly" in ended["SH/sh-b"]
    # Before ENDED_AFTER has passed, a quiet replica is not called ended.
    early = verify_segments(topic(broker)[:-1], trust)
    assert notes(early, "crash_gap") == {}


async def test_a_countersignature_beyond_a_replica_chain_s_head_is_truncation(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path, clock: Clock
) -> None:
    broker = MemoryBroker(partitions=1)
    state = StateStore(tmp_path / "state.sqlite")
    sh, js = trail(pki, broker, state, "SH", "sh-a"), trail(pki, broker, state, "JS")
    for _ in range(2):
        sh.append("checkpoint", "", None)
        await sh.durable()
    kafka = KafkaConfig(namespace="t")
    countersigner = Countersigner("JS", kafka, trust, js)
    last = topic(broker)[-1].checkpoint
    announced = {"region": "SH", "chain": last.chain, "seq": last.seq, "hash": last.hash, "jws": last.jws,
                 "at": topic(broker)[-1].records[-1]["at"]}
    countersigner.observe(b"SH", orjson.dumps(announced))
    countersigner.observe(b"JS", orjson.dumps({**announced, "region": "JS"}))  # its own region: ignored
    assert countersigner.countersign() == 1
    await js.durable()
    signed = topic(broker)[-1].records[-1]
    assert signed["detail"] == {"of": "SH/sh-a", "seq": 2, "hash": last.hash}
    assert verify_segments(topic(broker), trust).ok
    without_last = [s for s in topic(broker) if not (s.chain == "SH/sh-a" and s.checkpoint.seq == 2)]
    report = verify_segments(without_last, trust)
    assert [(f.region, f.kind) for f in report.faults] == [("SH/sh-a", "truncated")]


async def test_a_checkpoint_moved_to_another_chain_is_forged(pki: PkiLayout, trust: TrustStore, tmp_path: Path,
                                                             clock: Clock) -> None:
    broker = MemoryBroker(partitions=1)
    sh = trail(pki, broker, StateStore(tmp_path / "state.sqlite"), "SH", "sh-a")
    sh.append("checkpoint", "", None)
    await sh.durable()
    doc = orjson.loads(broker.records(TOPICS.audit)[0].value)
    doc["chain"] = "SH/sh-z"
    for r in doc["records"]:
        r["chain"] = "SH/sh-z"
    report = verify_segments([parse_segment(orjson.dumps(doc))], trust)
    assert {(f.region, f.kind) for f in report.faults} >= {("SH/sh-z", "forged")}
    with pytest.raises(ValueError, match="not a chain id of region SH"):
        parse_segment(orjson.dumps({**doc, "chain": "JS/sh-a"}))
    with pytest.raises(ValueError, match="unknown trail format"):
        parse_segment(orjson.dumps({**doc, "format": 4}))


async def relay_from_replica(pki: PkiLayout, broker: MemoryBroker, tmp_path: Path, sh_batches: bool = True,
                             js_batches: bool = True) -> None:
    """SH's replica sh-b sends MSG and MSG2 to JS (one chain), which delivers them; each side in format 3 (batch
    records) or as before (a record per message: formats 2 and 1)."""
    sh = trail(pki, broker, StateStore(tmp_path / "sh.sqlite"), "SH", "sh-b", sh_batches)
    js = trail(pki, broker, StateStore(tmp_path / "js.sqlite"), "JS", batch_records=js_batches)
    for stage, detail in (("accepted", {"platform": "sh-platform"}), ("published", {"topic": "t.yrdx.js.inbox"})):
        for m in (MSG, MSG2):
            sh.append(stage, m, SHA, "c-1", **detail)
    await sh.durable()
    for m in (MSG, MSG2):
        js.append("received", m, SHA, source="inbox:0:1")
    for m in (MSG, MSG2):
        js.append("verified", m, SHA, "c-1", signer="x", type="license.verify.request", sender="SH")
    for m in (MSG, MSG2):
        js.append("delivered", m, SHA, "c-1", platform="js-platform", mode="inbox")
    await js.durable()


@pytest.mark.parametrize(("sh_format", "js_format"), [(2, 1), (3, 3), (3, 1)],
                         ids=["formats 2 and 1", "format 3", "format 3 to format 1"])
async def test_a_message_sent_by_one_replica_is_matched_at_its_destination(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path, clock: Clock, sh_format: int, js_format: int
) -> None:
    broker = MemoryBroker(partitions=1)
    await relay_from_replica(pki, broker, tmp_path, sh_format == 3, js_format == 3)
    report = verify_segments(topic(broker), trust)
    assert report.ok and notes(report, "unmatched_pending") == {}, (report.faults, report.notes)
    assert report.regions["SH/sh-b"].records == (2 if sh_format == 3 else 4)  # a record per step, or per message
    assert report.regions["SH/sh-b"].entries == 4
    # A bundle of the message carries the replica's chain as written and verifies on its own.
    segments = topic(broker)
    keys, messages = select_records(segments, message=MSG)
    bundle_doc = build_bundle(segments, trust, keys, Selection(messages))
    sh_runs = [s for s in bundle_doc["segments"] if s["region"] == "SH"]
    assert sh_runs and all(s["chain"] == "SH/sh-b" and s["format"] == sh_format for s in sh_runs)
    assert bundle_doc["format"] == f"yrdx-audit-bundle/{2 if 3 in (sh_format, js_format) else 1}"
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle_doc))
    bundled = verify_bundle(load_bundle(path), trust)
    assert bundled.ok and "SH/sh-b" in bundled.regions, bundled.faults


async def test_an_entry_changed_in_a_replica_s_batch_record_is_edited_in_its_chain(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path, clock: Clock
) -> None:
    broker = MemoryBroker(partitions=1)
    await relay_from_replica(pki, broker, tmp_path)
    segments = topic(broker)
    sh = next(s for s in segments if s.chain == "SH/sh-b")
    published = sh.records[1]
    assert published["stage"] == "published" and [e[0] for e in published["entries"]] == [MSG, MSG2]
    published["entries"][1][2] = "0" * 64  # MSG2 published with another envelope, says the copy
    report = verify_segments(segments, trust)
    assert [(f.region, f.seq, f.kind) for f in report.faults] == [("SH/sh-b", published["seq"], "edited")]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[AuditIndex]:
    with open_index(tmp_path / "audit-index.sqlite") as ix:
        yield ix


async def test_the_index_keeps_a_region_s_chains_apart_and_returns_records_as_written(
    pki: PkiLayout, trust: TrustStore, tmp_path: Path, clock: Clock, index: AuditIndex
) -> None:
    """Also run against PostgreSQL (tests/integration/test_audit_index_postgres.py)."""
    broker, state, a, b = two_sh_replicas(pki, tmp_path)
    a.append("accepted", MSG, SHA, "c-1", platform="sh-platform")
    await a.durable()
    b.append("accepted", "other-message", SHA, "c-1", platform="sh-platform")  # seq 1 too, in sh-b's chain
    await b.durable()
    segments = [(0, s) for s in topic(broker)]
    stored = index.store(Batch(TOPICS.audit, segments, {0: len(segments)}, refused=check_segments(segments, trust)))
    assert (stored.new, stored.conflicts) == (2, 0)
    records: list[dict[str, Any]] = trace(index, MSG)
    assert {(r["region"], r["chain"], r["seq"]) for r in records} == {("SH", "SH/sh-a", 1), ("SH", "SH/sh-b", 1)}
    assert records == all_entries(r for s in topic(broker) for r in s.records)  # exactly as written, hashes and all
