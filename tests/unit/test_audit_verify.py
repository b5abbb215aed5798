"""Verifying the audit trail (gateway.audit.verify) on chains built here with real keys, record by record as the
gateways write them (gateway.audit.model's record_hash and checkpoint_bytes, and a real Signer): each fault
injected is found at its region and sequence number, and an intact trail, a crash gap and a pending delivery are
not faults. The `world` fixture runs each test on a trail of format 1 (a record per message) and of format 3
(batch records, as AuditTrail writes by default: a companion message shares each step's records); the format-3
cases at the end edit, drop and move entries inside batch records, and mix the two formats. `World`, `relay` and
`export` serve the other audit tests too."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit.bundle import Selection, build_bundle, select_records
from gateway.audit.model import GENESIS, TRAIL_FORMAT, Segment, checkpoint_bytes, parse_segment, record_hash
from gateway.audit.verify import Report, format_report, verify_segments, verify_values
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, init_pki, issue_gateway_cert, make_ca
from gateway.wire.envelope import utc_timestamp
from gateway.wire.regions import REGIONS

MSG = "01a20000-0000-7000-8000-000000000001"
RECEIPT = "01a20000-0000-7000-8000-0000000000r1"
CONV = "conv-1"
COMPANION = "01a20000-0000-7000-8000-0000000000c2"  # travels with MSG in the format-3 world: its batch records


@dataclass
class Clock:
    """Record times a few minutes in the past (inside the certificates' validity), one millisecond apart."""

    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4))

    def tick(self, seconds: float = 0.001) -> str:
        self.now += dt.timedelta(seconds=seconds)
        return utc_timestamp(self.now)


@dataclass
class Gateway:
    """One region's audit trail, written the way gateway.audit.trail.AuditTrail writes it: with `batch`, in trail
    format 3 (consecutive appends of one stage that name a message share a batch record, hashed when the next
    record or the flush closes it), else a record per message (format 1)."""

    region: str
    signer: Signer
    clock: Clock
    topic: list[Segment]
    seq: int = 0
    head: str = GENESIS
    pending: list[dict[str, Any]] = field(default_factory=list)
    batch: bool = False
    open: dict[str, Any] | None = None  # the batch record that takes the next entry of its stage

    def append(self, stage: str, message_id: str = "", sha: str | None = None, corr: str = "",
               **detail: str | int) -> dict[str, Any]:
        """The record appended (in format 3, the batch record the message's entry went to)."""
        if not (self.batch and message_id):
            return self._record(stage, message_id, corr, sha, detail)
        if self.open is None or self.open["stage"] != stage:
            self.open = self._record(stage, "", "", None, {}, entries=[])
        self.open["entries"].append([message_id, corr, sha, detail])
        return self.open

    def _record(self, stage: str, message_id: str, corr: str, sha: str | None, detail: dict[str, Any],
                entries: list[Any] | None = None) -> dict[str, Any]:
        self.close()
        self.seq += 1
        body: dict[str, Any] = {
            "seq": self.seq, "region": self.region, "message_id": message_id, "correlation_id": corr,
            "stage": stage, "at": self.clock.tick(), "envelope_sha256": sha, "detail": detail, "prev_hash": self.head,
        }
        if entries is None:
            body["hash"] = self.head = record_hash(self.head, body)
        else:
            body["entries"] = entries  # hashed by close(), once it takes no more
        self.pending.append(body)
        return body

    def close(self) -> None:
        """Hash the open batch record: it takes no more entries."""
        if self.open is not None:
            self.open["hash"] = self.head = record_hash(self.head, self.open)
            self.open = None

    def flush(self, signer: Signer | None = None) -> Segment:
        self.close()
        records, self.pending = self.pending, []
        last = records[-1]
        jws = (signer or self.signer).sign(checkpoint_bytes(self.region, last["seq"], last["hash"]))
        value = orjson.dumps({**({"format": TRAIL_FORMAT} if self.batch else {}), "region": self.region,
                              "records": records,
                              "checkpoint": {"seq": last["seq"], "hash": last["hash"], "jws": jws}})
        seg = parse_segment(value, len(self.topic))
        self.topic.append(seg)
        return seg

    def crash(self, lost: int) -> None:
        """Records appended but never published (the head was saved first), then a restart."""
        for _ in range(lost):
            self.append("checkpoint")
        self.pending = []
        self.append("resumed", saved_seq=self.seq)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def trust(pki: PkiLayout) -> TrustStore:
    return TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(r) for r in REGIONS])


def signer_of(pki: PkiLayout, region: str) -> Signer:
    return Signer(load_private_key(pki.gateway_key(region)), load_certificate(pki.gateway_cert(region)))


@dataclass
class World:
    pki: PkiLayout
    topic: list[Segment] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)
    gw: dict[str, Gateway] = field(default_factory=dict)
    batch: bool = False  # trail format 3 at every region (a test may set one gateway's `batch` apart)

    def __post_init__(self) -> None:
        for r in REGIONS:
            self.gw[r] = Gateway(r, signer_of(self.pki, r), self.clock, self.topic, batch=self.batch)


ENVELOPE = orjson.dumps({"id": MSG, "type": "license.verify.request", "schema_version": 1, "from": "SH",
                         "to": "ZJ", "correlation_id": CONV, "created_at": "2026-11-23T15:00:00.000Z",
                         "payload": {"use_cause": "audit test"}})
SHA = hashlib.sha256(ENVELOPE).hexdigest()


def receipt_of(msg: str) -> str:
    return RECEIPT if msg == MSG else f"receipt-of-{msg}"


def sha_of(msg: str) -> str:
    """A message's envelope hash: SHA for MSG (the ENVELOPE), another one for each other message."""
    return SHA if msg == MSG else hashlib.sha256(msg.encode()).hexdigest()


def relay(w: World, origin: str = "SH", dest: str = "ZJ", msg: str = MSG, sha: str = SHA,
          along: Sequence[str] = ()) -> None:
    """One message from origin to dest with its receipt, heartbeats around it, and countersignatures. `along`:
    messages that take each step with it, after it (in format 3 their entries share its batch records)."""
    o, d = w.gw[origin], w.gw[dest]
    sent = [(msg, sha), *((m, sha_of(m)) for m in along)]

    def each(g: Gateway, stage: str, *args: str, **detail: Callable[[str], str] | str) -> None:
        for m, h in sent:
            g.append(stage, m, h, *args, **{k: v(m) if callable(v) else v for k, v in detail.items()})

    for g in w.gw.values():
        g.append("checkpoint")
        g.append("checkpoint")
        g.flush()
    each(o, "accepted", CONV, platform=f"{origin.lower()}-platform")
    each(o, "published", CONV, topic=f"yrdx.{dest.lower()}.inbox")
    o.flush()
    each(d, "received", source="inbox:0:1")
    each(d, "verified", CONV, signer="x", type="license.verify.request", sender=origin)
    each(d, "delivered", CONV, platform=f"{dest.lower()}-platform", mode="webhook")
    each(d, "receipt_sent", CONV, receipt=receipt_of, outcome="delivered")
    d.flush()
    for m, _ in sent:
        o.append("received", receipt_of(m), "r" * 64, source="inbox:0:2")
    for m, _ in sent:
        o.append("verified", receipt_of(m), "r" * 64, CONV, signer="y", type="yrdx.receipt", sender=dest)
    each(o, "receipt_received", CONV, receipt=receipt_of, outcome="delivered")
    o.append("checkpoint")
    o.flush()
    countersign(w)


def countersign(w: World) -> None:
    for g in w.gw.values():
        for other in w.gw.values():
            if other is not g and other.seq:
                g.append("countersigned", of=other.region, seq=other.seq, hash=other.head)
        g.flush()


@pytest.fixture(params=[False, True], ids=["format 1", "format 3"])
def batch(request: pytest.FixtureRequest) -> bool:
    """Whether the trail is written in format 3 (batch records) or, as before, a record per message."""
    return bool(request.param)


def make_world(pki: PkiLayout, batch: bool) -> World:
    """MSG relayed from SH to ZJ; in format 3 with COMPANION in the same steps, so that batch records hold two."""
    w = World(pki, batch=batch)
    relay(w, along=(COMPANION,) if batch else ())
    return w


@pytest.fixture()
def world(pki: PkiLayout, batch: bool) -> World:
    return make_world(pki, batch)


def verify(w: World | list[Segment], trust: TrustStore, **kw: Any) -> Report:
    return verify_segments(w.topic if isinstance(w, World) else w, trust, **kw)


def faults(report: Report) -> set[tuple[str, int, str]]:
    return {(f.region, f.seq, f.kind) for f in report.faults}


def edit(segments: list[Segment], region: str, seq: int, change: Any) -> list[Segment]:
    """A deep copy of the topic with `change(records, index)` applied to the segment holding region#seq."""
    out = copy.deepcopy(segments)
    for i, seg in enumerate(out):
        for j, r in enumerate(seg.records):
            if seg.region == region and r["seq"] == seq:
                records = list(seg.records)
                change(records, j)
                out[i] = Segment(seg.region, records, seg.checkpoint, seg.offset)
                return out
    raise AssertionError(f"no record {region}#{seq}")


def middle(w: World, region: str) -> int:
    """A record that is neither the first nor the last of its segment."""
    for seg in w.topic:
        if seg.region == region and len(seg.records) >= 3:
            return int(seg.records[1]["seq"])
    raise AssertionError("no segment with three records")


# --- an intact trail ------------------------------------------------------------------------------------------


def test_an_intact_trail_has_no_fault_and_no_note(world: World, trust: TrustStore) -> None:
    report = verify(world, trust)
    assert report.ok, report.faults
    assert report.notes == []
    assert set(report.regions) == set(REGIONS)
    sh = report.regions["SH"]
    assert (sh.first_seq, sh.head_seq, sh.last_checkpoint) == (1, world.gw["SH"].seq, world.gw["SH"].seq)
    assert report.counts() == dict.fromkeys(report.counts(), 0)


# --- each fault, located --------------------------------------------------------------------------------------


def test_an_edited_record_is_named_by_region_and_seq(world: World, trust: TrustStore) -> None:
    seq = middle(world, "ZJ")

    def change(records: list[dict[str, Any]], j: int) -> None:
        records[j] = {**records[j], "stage": "rejected"}

    assert faults(verify(edit(world.topic, "ZJ", seq, change), trust)) == {("ZJ", seq, "edited")}


def test_a_record_changed_and_rehashed_is_still_edited(world: World, trust: TrustStore) -> None:
    seq = middle(world, "ZJ")

    def change(records: list[dict[str, Any]], j: int) -> None:
        r = {**records[j], "envelope_sha256": "0" * 64}
        r["hash"] = record_hash(r["prev_hash"], r)
        records[j] = r

    assert faults(verify(edit(world.topic, "ZJ", seq, change), trust)) == {("ZJ", seq, "edited")}


def test_a_deleted_record_is_named(world: World, trust: TrustStore) -> None:
    seq = middle(world, "SH")
    found = faults(verify(edit(world.topic, "SH", seq, lambda rs, j: rs.pop(j)), trust))
    assert found == {("SH", seq, "deleted")}


def test_a_deleted_last_record_of_a_segment_is_named(world: World, trust: TrustStore) -> None:
    first = next(s for s in world.topic if s.region == "JS")
    seq = first.checkpoint.seq
    found = faults(verify(edit(world.topic, "JS", seq, lambda rs, j: rs.pop(j)), trust))
    assert found == {("JS", seq, "deleted")}


def test_two_swapped_records_are_reordered(world: World, trust: TrustStore) -> None:
    seq = middle(world, "ZJ")

    def swap(records: list[dict[str, Any]], j: int) -> None:
        records[j], records[j + 1] = records[j + 1], records[j]

    assert faults(verify(edit(world.topic, "ZJ", seq, swap), trust)) == {
        ("ZJ", seq, "reordered"), ("ZJ", seq + 1, "reordered")}


def test_records_swapped_across_segments_are_reordered(world: World, trust: TrustStore) -> None:
    topic = copy.deepcopy(world.topic)
    ah = [i for i, s in enumerate(topic) if s.region == "AH"]
    a, b = topic[ah[0]], topic[ah[1]]
    ra, rb = list(a.records), list(b.records)
    ra[-1], rb[0] = rb[0], ra[-1]
    topic[ah[0]], topic[ah[1]] = Segment("AH", ra, a.checkpoint), Segment("AH", rb, b.checkpoint)
    seq = a.checkpoint.seq
    assert faults(verify(topic, trust)) == {("AH", seq, "reordered"), ("AH", seq + 1, "reordered")}


def test_a_truncated_tail_is_named_against_the_last_checkpoint(world: World, trust: TrustStore) -> None:
    last = [s for s in world.topic if s.region == "ZJ"][-1]
    head = last.checkpoint.seq
    topic = edit(world.topic, "ZJ", head, lambda rs, j: rs.pop(j))
    assert faults(verify(topic, trust)) == {("ZJ", head, "truncated")}


def test_a_segment_signed_by_a_key_of_another_ca_is_forged(world: World, trust: TrustStore) -> None:
    rogue_ca, rogue_key = make_ca("rogue root")
    cert, key = issue_gateway_cert(rogue_ca, rogue_key, "JS")
    js = world.gw["JS"]
    js.append("accepted", "forged-message", "f" * 64)
    seg = js.flush(Signer(key, cert, include_x5c=True))
    report = verify(world, trust)
    assert faults(report) == {("JS", seg.checkpoint.seq, "forged")}
    assert "untrusted_signer" in report.faults[0].detail


def test_a_segment_signed_by_another_regions_key_is_forged(world: World, pki: PkiLayout, trust: TrustStore) -> None:
    js = world.gw["JS"]
    js.append("checkpoint")
    seg = js.flush(signer_of(pki, "ZJ"))
    report = verify(world, trust)
    assert faults(report) == {("JS", seg.checkpoint.seq, "forged")}
    assert "certificate of ZJ" in report.faults[0].detail


def test_a_forged_record_beside_the_real_one_is_forged_and_nothing_else(world: World, pki: PkiLayout,
                                                                         trust: TrustStore) -> None:
    """A forger writes JS's next seq; the real gateway then writes its own record with that seq."""
    js = world.gw["JS"]
    seq, head = js.seq, js.head
    rogue_ca, rogue_key = make_ca("rogue root")
    cert, key = issue_gateway_cert(rogue_ca, rogue_key, "JS")
    js.append("delivered", "forged-message", "f" * 64)
    js.flush(Signer(key, cert))
    js.seq, js.head = seq, head  # the real gateway never saw it
    js.append("checkpoint")
    js.flush()
    assert faults(verify(world, trust)) == {("JS", seq + 1, "forged")}


def test_a_resigned_segment_inside_an_intact_chain_is_forged_and_not_a_deletion(world: World,
                                                                                 trust: TrustStore) -> None:
    rogue_ca, rogue_key = make_ca("rogue root")
    cert, key = issue_gateway_cert(rogue_ca, rogue_key, "SH")
    topic = copy.deepcopy(world.topic)
    i = [k for k, s in enumerate(topic) if s.region == "SH"][1]
    seg = topic[i]
    cp = seg.checkpoint
    jws = Signer(key, cert).sign(checkpoint_bytes("SH", cp.seq, cp.hash))
    topic[i] = Segment("SH", seg.records, type(cp)("SH", cp.seq, cp.hash, jws), seg.offset)
    assert faults(verify(topic, trust)) == {("SH", cp.seq, "forged")}


def test_another_pkis_whole_chain_on_the_topic_is_forged_and_nothing_else(world: World, pki: PkiLayout,
                                                                         tmp_path: Path, trust: TrustStore) -> None:
    """What `yrdx demo` leaves on a shared topic: the same regions, chains from seq 1, another root."""
    other = World(init_pki(tmp_path / "other"), clock=world.clock)
    relay(other)
    relay(other, "JS", "AH", msg="m-9")
    mixed = [*world.topic[:5], *other.topic, *world.topic[5:]]
    relay(world, "AH", "ZJ", msg="m-10")
    mixed += world.topic[len(mixed) - len(other.topic):]
    found = faults(verify(mixed, trust))
    assert found and {kind for _, _, kind in found} == {"forged"}
    assert len(found) == len(other.topic)


def test_a_checkpoint_outside_the_certificates_validity_is_forged(world: World, pki: PkiLayout,
                                                                   trust: TrustStore) -> None:
    ca, ca_key = load_certificate(pki.ca_cert), load_private_key(pki.ca_key)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    cert, key = issue_gateway_cert(ca, ca_key, "AH", not_before=later)
    ah = world.gw["AH"]
    ah.append("checkpoint")
    seg = ah.flush(Signer(key, cert, include_x5c=True))  # its records are older than the certificate
    report = verify(world, trust)
    assert faults(report) == {("AH", seg.checkpoint.seq, "forged")}
    assert "certificate_not_yet_valid" in report.faults[0].detail


def test_a_value_that_is_not_a_segment_is_forged(world: World, trust: TrustStore) -> None:
    values = [(s.region.encode(), orjson.dumps(s.to_json()), i) for i, s in enumerate(world.topic)]
    values.append((b"JS", b'{"not": "a segment"}', len(values)))
    assert faults(verify_values(values, trust)) == {("JS", 0, "forged")}


# --- crashes, countersignatures -------------------------------------------------------------------------------


def test_a_crash_gap_with_its_resumed_marker_is_a_note_not_a_fault(world: World, trust: TrustStore) -> None:
    zj = world.gw["ZJ"]
    gap_start = zj.seq + 1
    zj.crash(lost=3)
    zj.flush()
    report = verify(world, trust)
    assert report.ok, report.faults
    assert [(n.region, n.seq, n.kind) for n in report.notes] == [("ZJ", gap_start, "crash_gap")]
    assert f"records {gap_start}..{gap_start + 2}" in report.notes[0].detail


def test_a_segment_published_twice_is_a_note_not_a_fault(world: World, trust: TrustStore) -> None:
    sh = world.gw["SH"]
    sh.append("checkpoint")
    sh.append("checkpoint")
    seg = sh.flush()
    world.topic.append(seg)  # a publish retried after the broker had in fact written it
    countersign(world)
    report = verify(world, trust)
    assert report.ok, report.faults
    assert [(n.region, n.seq, n.kind) for n in report.notes] == [("SH", seg.records[0]["seq"], "duplicate")]


def test_a_gap_without_a_resumed_marker_is_a_deletion(world: World, trust: TrustStore) -> None:
    zj = world.gw["ZJ"]
    gap_start = zj.seq + 1
    for _ in range(2):
        zj.append("checkpoint")
    zj.pending = []
    zj.append("checkpoint")
    zj.flush()
    assert faults(verify(world, trust)) == {("ZJ", gap_start, "deleted")}


def test_a_resumed_marker_does_not_excuse_a_gap_another_region_countersigned(world: World,
                                                                              trust: TrustStore) -> None:
    zj = world.gw["ZJ"]
    zj.append("checkpoint")
    vouched = zj.flush()  # published, and countersigned by the others ...
    countersign(world)
    topic = [s for s in world.topic if s is not vouched]  # ... then removed
    zj.append("resumed", saved_seq=zj.seq)  # a marker that claims the records were never published
    zj.flush()
    topic.append(world.topic[-1])
    assert ("ZJ", vouched.checkpoint.seq, "deleted") in faults(verify(topic, trust))


def test_a_history_rewritten_after_countersigning_contradicts_the_countersignatures(
        world: World, pki: PkiLayout, trust: TrustStore) -> None:
    """SH re-signs its whole chain with one record changed: every signature holds, the others' do not agree."""
    sh_segments = [s for s in world.topic if s.region == "SH"]
    target = int(sh_segments[1].records[0]["seq"])
    signer, head, rewritten = signer_of(pki, "SH"), GENESIS, []
    for seg in sh_segments:
        records = []
        for r in seg.records:
            r = {**r, "prev_hash": head}
            if r["seq"] == target:  # a batch record's messages are in its entries: rewrite the first one's
                if "entries" in r:
                    r["entries"] = [[*r["entries"][0][:3], {"rewritten": "yes"}], *r["entries"][1:]]
                else:
                    r["detail"] = {"rewritten": "yes"}
            r["hash"] = head = record_hash(head, r)
            records.append(r)
        last = records[-1]
        cp = {"seq": last["seq"], "hash": last["hash"],
              "jws": signer.sign(checkpoint_bytes("SH", last["seq"], last["hash"]))}
        rewritten.append(parse_segment(orjson.dumps({**seg.to_json(), "records": records, "checkpoint": cp})))
    topic = [s for s in world.topic if s.region != "SH"] + rewritten
    found = faults(verify(topic, trust))
    assert found and {kind for _, _, kind in found} == {"rewritten"}
    assert all(region == "SH" and seq >= target for region, seq, _ in found)


def test_a_chain_cut_before_a_countersigned_head_is_truncated(world: World, trust: TrustStore) -> None:
    sh_segments = [s for s in world.topic if s.region == "SH"]
    dropped = sh_segments[-2:]  # SH's last two segments are gone; the others countersigned one of them
    topic = [s for s in world.topic if not any(s is d for d in dropped)]
    head = dropped[0].records[0]["seq"] - 1
    assert faults(verify(topic, trust)) == {("SH", head + 1, "truncated")}
    # A bundle holds runs, not whole chains: there the countersignature says nothing about the cut.
    assert verify(topic, trust, complete=False).ok


# --- a message on both sides ----------------------------------------------------------------------------------


def test_a_delivery_the_origin_never_sent_is_unmatched(pki: PkiLayout, trust: TrustStore, batch: bool) -> None:
    w = World(pki, batch=batch)
    relay(w)
    o, d = w.gw["JS"], w.gw["AH"]
    d.append("received", "injected", SHA, source="inbox:0:9")
    d.append("verified", "injected", SHA, "", sender="JS")
    seq = d.append("delivered", "injected", SHA, "")["seq"]
    d.flush()
    o.append("receipt_received", "injected", SHA, "", receipt="r2", outcome="unmatched")
    o.flush()
    assert faults(verify(w, trust)) == {("AH", seq, "unmatched")}


def test_a_delivery_newer_than_the_origins_head_is_pending_not_unmatched(pki: PkiLayout, trust: TrustStore,
                                                                          batch: bool) -> None:
    w = World(pki, batch=batch)
    relay(w)
    d = w.gw["AH"]
    d.append("received", "in-flight", SHA)
    d.append("verified", "in-flight", SHA, "", sender="JS")
    seq = d.append("delivered", "in-flight", SHA, "")["seq"]
    d.flush()
    report = verify(w, trust)
    assert report.ok and ("AH", seq, "unmatched_pending") in {(n.region, n.seq, n.kind) for n in report.notes}
    w.clock.tick(61)  # JS's chain moves on well past the delivery without ever having sent it
    w.gw["JS"].append("checkpoint")
    w.gw["JS"].flush()
    assert faults(verify(w, trust)) == {("AH", seq, "unmatched")}


def test_a_delivery_without_its_verification_or_with_another_hash_is_unmatched(pki: PkiLayout, trust: TrustStore,
                                                                                batch: bool) -> None:
    w = World(pki, batch=batch)
    relay(w, "SH", "ZJ", msg="m-1")
    relay(w, "JS", "ZJ", msg="m-2", sha="e" * 64)
    zj = w.gw["ZJ"]
    zj.append("received", "m-3", SHA)
    no_verify = zj.append("delivered", "m-3", SHA, "")["seq"]
    zj.flush()
    # the origin recorded one envelope, the destination another
    js = w.gw["JS"]
    js.append("accepted", "m-4", "1" * 64)
    js.append("published", "m-4", "1" * 64)
    js.flush()
    zj.append("received", "m-4", "2" * 64)
    zj.append("verified", "m-4", "2" * 64, "", sender="JS")
    other_hash = zj.append("delivered", "m-4", "2" * 64)["seq"]
    zj.flush()
    assert faults(verify(w, trust)) == {("ZJ", no_verify, "unmatched"), ("ZJ", other_hash, "unmatched")}


# --- format 3: batch records ------------------------------------------------------------------------------------


def batch_of(w: World, region: str, stage: str) -> dict[str, Any]:
    """The first batch record of `stage` at `region`."""
    return next(r for seg in w.topic if seg.region == region for r in seg.records
                if r["stage"] == stage and "entries" in r)


def test_a_format_3_trail_has_a_record_per_step_and_counts_its_entries(pki: PkiLayout, trust: TrustStore) -> None:
    w = make_world(pki, batch=True)
    delivered = batch_of(w, "ZJ", "delivered")
    assert [e[0] for e in delivered["entries"]] == [MSG, COMPANION]
    assert (delivered["message_id"], delivered["envelope_sha256"], delivered["detail"]) == ("", None, {})
    report = verify(w, trust)
    assert report.ok and report.notes == [], report.faults
    zj = report.regions["ZJ"]
    assert zj.entries == zj.records + 4  # received, verified, delivered, receipt_sent: two entries each
    assert report.to_json()["entries"] == report.entries == sum(s.entries for s in report.regions.values())
    assert format_report(report).endswith(
        f" {report.records} records ({report.entries} entries) in {report.segments} segments: OK")
    old = verify(make_world(pki, batch=False), trust)  # a record per message: entries are records
    assert old.entries == old.records and format_report(old).endswith(
        f" {old.records} records in {old.segments} segments: OK")


ENTRY_CHANGES: dict[str, Callable[[dict[str, Any]], object]] = {
    "an entry's envelope hash": lambda r: r["entries"][0].__setitem__(2, "0" * 64),
    "an entry's detail": lambda r: r["entries"][1][3].update(mode="inbox"),
    "an entry dropped": lambda r: r["entries"].pop(),
    "the entries reordered": lambda r: r["entries"].reverse(),
}


@pytest.mark.parametrize("rehashed", [False, True], ids=["as is", "rehashed"])
@pytest.mark.parametrize("how", ENTRY_CHANGES)
def test_an_entry_changed_dropped_or_moved_inside_a_batch_record_is_edited(pki: PkiLayout, trust: TrustStore,
                                                                          how: str, rehashed: bool) -> None:
    """The record's hash covers its entries; rehashed, the next record no longer links to it."""
    w = make_world(pki, batch=True)
    seq = batch_of(w, "ZJ", "delivered")["seq"]

    def change(records: list[dict[str, Any]], j: int) -> None:  # edit() works on a deep copy
        ENTRY_CHANGES[how](records[j])
        if rehashed:
            records[j]["hash"] = record_hash(records[j]["prev_hash"], records[j])

    report = verify(edit(w.topic, "ZJ", seq, change), trust)
    assert faults(report) == {("ZJ", seq, "edited")}
    assert report.faults[0].entry is None  # the record is what was edited, not one message


def test_a_delivered_entry_without_its_received_is_unmatched_at_its_entry(pki: PkiLayout, trust: TrustStore) -> None:
    w = World(pki, batch=True)
    relay(w)
    js, zj = w.gw["JS"], w.gw["ZJ"]
    sent = ("m-a", "m-b", "m-c")
    for m in sent:
        js.append("accepted", m, sha_of(m), CONV)
    published = js.append("published", "m-a", sha_of("m-a"), CONV)["seq"]
    js.append("published", "m-b", sha_of("m-b"), CONV)
    js.append("published", "m-c", "1" * 64, CONV)  # m-c: another envelope than the one ZJ delivered
    js.flush()
    for m in ("m-a", "m-c"):  # m-b was never received
        zj.append("received", m, sha_of(m), source="inbox:0:7")
    for m in sent:
        zj.append("verified", m, sha_of(m), CONV, sender="JS")
    for m in sent:
        delivered = zj.append("delivered", m, sha_of(m), CONV)["seq"]
    zj.flush()
    report = verify(w, trust)
    assert [(f.region, f.seq, f.entry, f.kind) for f in report.faults] == [
        ("ZJ", delivered, 1, "unmatched"), ("ZJ", delivered, 2, "unmatched")]
    no_received, other_hash = report.faults
    assert str(no_received) == (f"ZJ seq {delivered}.1: unmatched: message m-b delivered with no received record "
                                "before it")
    assert f"JS record {published}.2 (published) names another envelope hash" in other_hash.detail
    assert [f["entry"] for f in report.to_json()["faults"]] == [1, 2]


def test_a_format_1_region_and_a_format_3_region_verify_together(pki: PkiLayout, trust: TrustStore) -> None:
    w = World(pki, batch=True)
    w.gw["SH"].batch = False  # SH still runs a version from before batch records
    relay(w, "SH", "ZJ", along=(COMPANION,))
    relay(w, "ZJ", "SH", msg="m-back", along=("m-back-2",))
    assert {s.format for s in w.topic if s.region == "SH"} == {1}
    assert TRAIL_FORMAT in {s.format for s in w.topic if s.region == "ZJ"}
    report = verify(w, trust)
    assert report.ok and report.notes == [], report.faults
    # A delivery at ZJ (format 3) that SH (format 1) never sent is still found, at its entry.
    zj = w.gw["ZJ"]
    for stage in ("received", "verified", "delivered"):
        for m in ("m-x", COMPANION):
            seq = zj.append(stage, m, sha_of(m), CONV, sender="SH")["seq"]
    zj.flush()
    w.clock.tick(61)  # SH's chain moves well past the delivery
    w.gw["SH"].append("checkpoint")
    w.gw["SH"].flush()
    assert [(f.region, f.seq, f.entry, f.kind) for f in verify(w, trust).faults] == [("ZJ", seq, 0, "unmatched")]


# --- bundles --------------------------------------------------------------------------------------------------


def export(w: World, trust: TrustStore, tmp_path: Path, **selection: Any) -> Path:
    keys, messages = select_records(w.topic, **selection)
    doc = build_bundle(w.topic, trust, keys, Selection(messages, selection.get("conversation")))
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(doc))
    return path
