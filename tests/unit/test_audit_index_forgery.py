"""The audit index takes a region's records only from segments whose checkpoint holds against the trust store and
whose records are the run that checkpoint signs. A forged chain published first no longer hides the genuine
one: the genuine records are indexed when they arrive, the forged ones are kept apart as conflicts (with their
position on the topic and why), and a trace names the conflicts that touch its messages.

Chains are written with real keys, record by record as the gateways write them (tests/unit/test_audit_verify.py's
World), and in batch records (trail format 3) by the real AuditTrail: a batch record kept apart is kept entry by
entry, so the trace of any message it names shows it. The backend behaviours take the `index` fixture;
tests/integration/test_audit_index_forgery_postgres.py runs them against PostgreSQL as well.
"""

from __future__ import annotations

import copy
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.index import (
    AuditIndex,
    Batch,
    check_segments,
    format_trace,
    open_index,
    trace,
    trace_document,
)
from gateway.audit.model import GENESIS, Checkpoint, Segment, all_entries, checkpoint_bytes, parse_segment, record_hash
from gateway.audit.trail import AuditTrail
from gateway.crypto.jws import Signer, b64url_encode
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, init_pki, issue_gateway_cert, make_ca
from gateway.kafka.memory import MemoryBroker, MemoryPublisher
from gateway.state import StateStore
from gateway.wire.regions import REGIONS, Topics
from tests.unit.test_audit_verify import MSG, World, relay, signer_of

TOPIC = "yrdx.audit"
TOPICS = Topics("t")
Sign = Callable[[bytes], str]  # checkpoint bytes -> a JWS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def trust(pki: PkiLayout) -> TrustStore:
    return TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(r) for r in REGIONS])


@pytest.fixture(scope="module")
def world(pki: PkiLayout) -> World:
    w = World(pki)
    relay(w)  # SH -> ZJ: MSG, its receipt, heartbeats and countersignatures
    return w


@pytest.fixture
def index(tmp_path: Path) -> Iterator[AuditIndex]:
    with open_index(tmp_path / "audit-index.sqlite") as ix:
        yield ix


def signers(pki: PkiLayout) -> dict[str, Sign]:
    """How a forger who knows ZJ's certificate but not its key signs ZJ's checkpoints."""
    real = signer_of(pki, "ZJ").sign(b"")
    header = real.split("..", 1)[0]
    rogue_ca, rogue_key = make_ca("not the exchange's root")
    rogue_cert, rogue = issue_gateway_cert(rogue_ca, rogue_key, "ZJ")
    other = signer_of(pki, "SH")
    return {
        "garbage under ZJ's header": lambda _: f"{header}..{b64url_encode(os.urandom(64))}",
        "another key under ZJ's header": lambda content: f"{header}..{other.sign(content).split('..', 1)[1]}",
        "a key of another root": Signer(rogue, rogue_cert, include_x5c=True).sign,
        "the key of another region": other.sign,
    }


FORGERS = ["garbage under ZJ's header", "another key under ZJ's header", "a key of another root",
           "the key of another region"]


def rechain(segments: Sequence[Segment], change: Callable[[dict[str, Any]], None], sign: Sign) -> list[Segment]:
    """The region's chain in `segments` again from the genesis, each record passed through `change`, every hash
    recomputed and every checkpoint signed with `sign`: a consistent chain that only the signatures betray."""
    head, out = GENESIS, []
    for seg in segments:
        records = []
        for r in copy.deepcopy(seg.records):
            change(r)
            r["prev_hash"] = head
            r["hash"] = head = record_hash(head, r)
            records.append(r)
        last = records[-1]
        jws = sign(checkpoint_bytes(seg.region, last["seq"], last["hash"]))
        out.append(Segment(seg.region, records, Checkpoint(seg.region, last["seq"], last["hash"], jws)))
    return out


def not_delivered(r: dict[str, Any]) -> None:
    """The forger's story: ZJ refused MSG instead of delivering it."""
    if r["message_id"] == MSG and r["stage"] == "delivered":
        r["stage"], r["detail"] = "rejected", {"reason": "bad_signature", "claimed_id": MSG}


def laid(segments: Sequence[Segment]) -> list[Segment]:
    """The segments at consecutive offsets of one partition, in this order."""
    return [Segment(s.region, s.records, s.checkpoint, offset) for offset, s in enumerate(segments)]


def checked(segments: Sequence[Segment], trust: TrustStore | None) -> Batch:
    """What update_index stores for one fetch of these segments."""
    pairs = [(0, s) for s in segments]
    return Batch(TOPIC, pairs, {0: segments[-1].offset + 1}, refused=check_segments(pairs, trust))


def zj_of(segments: Sequence[Segment]) -> list[Segment]:
    return [s for s in segments if s.region == "ZJ"]


def kinds(conflicts: Sequence[dict[str, Any]]) -> set[str]:
    return {c["kind"] for c in conflicts}


def genuine_trace(world: World, tmp_path: Path) -> list[dict[str, Any]]:
    with open_index(tmp_path / "genuine-only.sqlite") as ix:
        ix.store(checked(laid(world.topic), None))
        return trace(ix, MSG)


# --- backend behaviours (also run against PostgreSQL) ----------------------------------------------------------


@pytest.mark.parametrize("forger", FORGERS)
def test_a_forged_chain_published_first_does_not_hide_the_genuine_one(index: AuditIndex, world: World,
                                                                     pki: PkiLayout, trust: TrustStore,
                                                                     tmp_path: Path, forger: str) -> None:
    forged = rechain(zj_of(world.topic), not_delivered, signers(pki)[forger])
    topic = laid([*forged, *world.topic])  # the forger writes first
    stored = index.store(checked(topic, trust))
    forged_records = sum(len(s.records) for s in forged)
    assert stored.new == sum(len(s.records) for s in world.topic) and stored.conflicts == forged_records
    assert index.counts() == {"records": stored.new, "segments": len(world.topic), "conflicts": forged_records}

    doc = trace_document(index, MSG)
    assert doc is not None
    assert doc["records"] == genuine_trace(world, tmp_path)  # exactly the genuine records, none of the forger's
    assert ("ZJ", "delivered") in {(r["region"], r["stage"]) for r in doc["records"]}
    # Every forged ZJ record that names MSG or takes the place of one of the trace's ZJ records is reported.
    traced_zj = {r["seq"] for r in doc["records"] if r["region"] == "ZJ"}
    want = {(r["seq"], s.offset) for s in topic[:len(forged)] for r in s.records
            if r["message_id"] == MSG or r.get("detail", {}).get("claimed_id") == MSG or r["seq"] in traced_zj}
    assert {(c["seq"], c["offset"]) for c in doc["conflicts"]} == want
    assert kinds(doc["conflicts"]) == {"forged"} and {c["region"] for c in doc["conflicts"]} == {"ZJ"}
    refused = next(c for c in doc["conflicts"] if c["record"]["stage"] == "rejected")
    assert refused["record"]["detail"] == {"reason": "bad_signature", "claimed_id": MSG}
    assert refused["reason"].startswith("checkpoint")  # the checkpoint fault, as `yrdx audit verify` words it
    assert refused["hash"] == refused["record"]["hash"] and refused["partition"] == 0


def test_a_genuine_segment_whose_records_were_changed_is_kept_apart_as_edited(index: AuditIndex, world: World,
                                                                              trust: TrustStore) -> None:
    """A copy of ZJ's genuine segment with its real checkpoint, one record changed (and even rehashed): the
    signature holds, but not over these records."""
    genuine = next(s for s in zj_of(world.topic) if any(r["stage"] == "delivered" for r in s.records))
    records = copy.deepcopy(genuine.records)
    delivered = next(r for r in records if r["stage"] == "delivered")
    not_delivered(delivered)
    delivered["hash"] = record_hash(delivered["prev_hash"], delivered)
    edited = Segment("ZJ", records, genuine.checkpoint)
    index.store(checked(laid([edited, *world.topic]), trust))
    doc = trace_document(index, MSG)
    assert doc is not None
    assert next(r for r in doc["records"] if r["seq"] == delivered["seq"] and r["region"] == "ZJ")["stage"] == \
        "delivered"
    assert kinds(doc["conflicts"]) == {"edited"}
    assert {c["offset"] for c in doc["conflicts"]} == {0}
    assert all("does not follow" in c["reason"] for c in doc["conflicts"])


def test_two_validly_signed_records_under_one_seq_keep_the_first_and_report_the_other(index: AuditIndex,
                                                                                      world: World, pki: PkiLayout,
                                                                                      trust: TrustStore) -> None:
    """A fork signed with ZJ's own key (its state restored from an old backup, say): both hold, the first
    indexed stays and the other is reported as rewritten."""
    fork = rechain(zj_of(world.topic), not_delivered, signer_of(pki, "ZJ").sign)
    topic = laid([*world.topic, *fork])
    index.store(checked(topic, trust))
    doc = trace_document(index, MSG)
    assert doc is not None
    assert ("ZJ", "delivered") in {(r["region"], r["stage"]) for r in doc["records"]}
    assert kinds(doc["conflicts"]) == {"rewritten"}
    assert all(c["offset"] >= len(world.topic) for c in doc["conflicts"])


def test_a_record_of_another_region_inside_a_signed_segment_is_not_indexed_as_that_regions(
        index: AuditIndex, pki: PkiLayout, trust: TrustStore) -> None:
    """SH's key signs SH's chain; it cannot vouch for a record claiming to be JS's."""
    w = World(pki)
    sh = w.gw["SH"]
    sh.append("checkpoint")
    r = sh.append("delivered", MSG, "f" * 64)
    r["region"] = "JS"
    r["hash"] = sh.head = record_hash(r["prev_hash"], r)
    sh.flush()
    index.store(checked(laid(w.topic), trust))
    assert index.records_with("message_id", [MSG]) == []
    (conflict,) = index.conflicts_with("message_id", [MSG])
    assert (conflict["region"], conflict["kind"]) == ("JS", "edited")
    assert "names region 'JS' in a segment of SH" in conflict["reason"]


def test_without_a_trust_store_the_first_chain_stays_and_the_other_is_still_reported(index: AuditIndex,
                                                                                      world: World,
                                                                                      pki: PkiLayout) -> None:
    """What the index did for everyone before it checked signatures: the forgery wins. Even then a trace no
    longer keeps quiet about the genuine records it did not index."""
    forged = rechain(zj_of(world.topic), not_delivered, signers(pki)["garbage under ZJ's header"])
    index.store(checked(laid([*forged, *world.topic]), None))
    doc = trace_document(index, MSG)
    assert doc is not None
    assert ("ZJ", "rejected") in {(r["region"], r["stage"]) for r in doc["records"]}
    assert kinds(doc["conflicts"]) == {"rewritten"}
    assert ("ZJ", "delivered") in {(c["region"], c["record"]["stage"]) for c in doc["conflicts"]}


def test_a_message_only_forged_records_name_is_traced_with_its_conflicts_alone(index: AuditIndex, world: World,
                                                                               pki: PkiLayout,
                                                                               trust: TrustStore) -> None:
    ghost = "01a20000-0000-7000-8000-00000000dead"

    def invent(r: dict[str, Any]) -> None:
        if r["message_id"] == MSG:
            r["message_id"] = ghost

    forged = rechain(zj_of(world.topic), invent, signers(pki)["a key of another root"])
    index.store(checked(laid([*world.topic, *forged]), trust))
    doc = trace_document(index, ghost)
    assert doc is not None and doc["records"] == [] and doc["regions"] == []
    assert doc["conflicts"] and kinds(doc["conflicts"]) == {"forged"}
    assert {c["record"]["message_id"] for c in doc["conflicts"]} == {ghost}
    assert trace_document(index, "01a20000-0000-7000-8000-000000000404") is None


def test_reading_the_same_forged_segments_again_reports_them_once(index: AuditIndex, world: World, pki: PkiLayout,
                                                                  trust: TrustStore) -> None:
    forged = rechain(zj_of(world.topic), not_delivered, signers(pki)["garbage under ZJ's header"])
    topic = laid([*forged, *world.topic])
    first = index.store(checked(topic, trust))
    again = index.store(checked(topic, trust))
    assert again.new == 0 and again.conflicts == 0
    assert index.counts()["conflicts"] == first.conflicts


# --- SQLite only: the table, an index of the old layout ----------------------------------------------------------


def test_the_table_lists_the_conflicts_below_the_records(index: AuditIndex, world: World, pki: PkiLayout,
                                                         trust: TrustStore) -> None:
    forged = rechain(zj_of(world.topic), not_delivered, signers(pki)["another key under ZJ's header"])
    index.store(checked(laid([*forged, *world.topic]), trust))
    doc = trace_document(index, MSG)
    assert doc is not None
    text = format_trace(doc)
    lines = text.splitlines()
    assert f"{len(doc['records'])} records in SH, ZJ; {len(doc['conflicts'])} CONFLICTING records (below)" in lines[1]
    at = next(i for i, line in enumerate(lines) if line.startswith("CONFLICTS: "))
    assert lines[at + 2].split() == ["REGION", "SEQ", "KIND", "AT", "STAGE", "MESSAGE", "RECORD", "OFFSET", "REASON"]
    rows = lines[at + 3:]
    assert len(rows) == len(doc["conflicts"])
    rejected = next(row for row in rows if " rejected " in row)
    assert rejected.split()[:3] == ["ZJ", str(next(c["seq"] for c in doc["conflicts"]
                                                  if c["record"]["stage"] == "rejected")), "forged"]
    assert "checkpoint signature does not verify" in rejected
    assert "CONFLICTS" not in format_trace({**doc, "conflicts": []})


def test_an_index_of_the_old_layout_is_rebuilt_from_the_topic(tmp_path: Path, world: World,
                                                             trust: TrustStore) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # what the index held before conflicts kept their record and kind
        db.execute("CREATE TABLE audit_conflicts (region TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, "
                   "topic_partition INTEGER NOT NULL, topic_offset INTEGER NOT NULL, PRIMARY KEY (region, seq, hash))")
        db.execute("CREATE TABLE audit_positions (topic TEXT NOT NULL, partition INTEGER NOT NULL, "
                   "next_offset INTEGER NOT NULL, PRIMARY KEY (topic, partition))")
        db.execute("INSERT INTO audit_positions VALUES ('yrdx.audit', 0, 99)")
    with open_index(path) as ix:
        assert ix.positions(TOPIC) == {}  # read again from the beginning
        batch = checked(laid(world.topic), trust)
        assert ix.store(batch).new == sum(len(s.records) for s in world.topic)
    with open_index(path) as ix:  # and kept when opened again
        assert ix.positions(TOPIC) == {0: len(world.topic)}


def test_check_segments_takes_a_genuine_trail_whole(world: World, trust: TrustStore) -> None:
    assert checked(laid(world.topic), trust).refused == {}
    assert checked(laid(world.topic), None).refused == {}


# --- batch records (trail format 3), written by the real AuditTrail with ZJ's key --------------------------------

BATCHED = ("01a20000-0000-7000-8000-0000000000b1", "01a20000-0000-7000-8000-0000000000b2",
           "01a20000-0000-7000-8000-0000000000b3")


@pytest.fixture
async def batched_zj(pki: PkiLayout, tmp_path: Path) -> list[Segment]:
    """ZJ receiving, verifying and delivering three messages of one consumed batch: a batch record per stage."""
    broker = MemoryBroker(partitions=1)
    zj = AuditTrail("ZJ", signer_of(pki, "ZJ"), StateStore(tmp_path / "zj.sqlite"), MemoryPublisher(broker),
                    topics=TOPICS)
    zj.append("checkpoint", "", None)
    for stage, detail in (("received", {"source": "inbox:0:1"}), ("verified", {"signer": "x", "sender": "SH"}),
                          ("delivered", {"platform": "zj-platform", "mode": "webhook"})):
        for msg in BATCHED:
            zj.append(stage, msg, "e" * 64, "conv-b", **detail)
    await zj.durable()
    zj.append("checkpoint", "", None)
    await zj.durable()
    segments = laid([parse_segment(r.value) for r in broker.records(TOPICS.audit)])
    assert [len(s.records) for s in segments] == [4, 1] and segments[0].format == 3
    return segments


def batch_not_delivered(r: dict[str, Any]) -> None:
    """The forger's story for a batch record: ZJ refused the three messages instead of delivering them."""
    if r["stage"] == "delivered":
        r["stage"] = "rejected"
        r["entries"] = [[msg, corr, sha, {"reason": "bad_signature"}] for msg, corr, sha, _ in r["entries"]]


async def test_a_forged_batched_chain_is_kept_apart_entry_by_entry(index: AuditIndex, batched_zj: list[Segment],
                                                                   pki: PkiLayout, trust: TrustStore) -> None:
    forged = rechain(batched_zj, batch_not_delivered, signers(pki)["another key under ZJ's header"])
    assert forged[0].format == 3
    stored = index.store(checked(laid([*forged, *batched_zj]), trust))
    entries = len(all_entries(r for s in batched_zj for r in s.records))
    assert (stored.new, stored.conflicts) == (entries, entries)  # 3 stages x 3 messages and 2 checkpoints each
    for i, msg in enumerate(BATCHED):
        doc = trace_document(index, msg)
        assert doc is not None
        # The conversation's nine entries, the genuine ones, in chain order
        assert [(r["stage"], r["seq"], r["entry"]) for r in doc["records"]] == [
            (stage, seq, e) for seq, stage in ((2, "received"), (3, "verified"), (4, "delivered")) for e in range(3)]
        assert doc["records"] == [e for e in all_entries(batched_zj[0].records) if e["message_id"]]
        # The forger's entries for this message, and every entry at the places of its records.
        assert kinds(doc["conflicts"]) == {"forged"} and {c["offset"] for c in doc["conflicts"]} == {0}
        assert {(c["seq"], c["entry"]) for c in doc["conflicts"]} == {(s, e) for s in (2, 3, 4) for e in range(3)}
        mine = [c for c in doc["conflicts"] if c["record"]["message_id"] == msg]
        assert [(c["record"]["stage"], c["entry"], c["record"]["entry"]) for c in mine] == [
            ("received", i, i), ("verified", i, i), ("rejected", i, i)]
        assert mine[-1]["record"]["detail"] == {"reason": "bad_signature"}
        assert all(c["hash"] == c["record"]["hash"] for c in doc["conflicts"])
        text = format_trace(doc)
        assert f" 4.{i} " in text and "rejected" in text.split("CONFLICTS: ")[1]


async def test_a_batch_record_whose_entry_was_changed_is_kept_apart_as_edited(
        index: AuditIndex, batched_zj: list[Segment], trust: TrustStore) -> None:
    genuine = batched_zj[0]
    records = copy.deepcopy(genuine.records)
    records[3]["entries"][1][3] = {"platform": "someone-else", "mode": "webhook"}  # M2's delivery, hash unchanged
    edited = Segment("ZJ", records, genuine.checkpoint)
    index.store(checked(laid([edited, *batched_zj]), trust))
    doc = trace_document(index, BATCHED[1])
    assert doc is not None
    assert next(r for r in doc["records"] if r["stage"] == "delivered")["detail"]["platform"] == "zj-platform"
    assert kinds(doc["conflicts"]) == {"edited"} and {c["offset"] for c in doc["conflicts"]} == {0}
    assert all(c["reason"] == "record 4 does not match its hash" for c in doc["conflicts"])
    changed = next(c for c in doc["conflicts"] if c["record"]["detail"].get("platform") == "someone-else")
    assert (changed["seq"], changed["entry"], changed["record"]["message_id"]) == (4, 1, BATCHED[1])
