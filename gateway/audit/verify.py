"""Verifying the audit trail: every chain, its signed checkpoints and the regions' evidence about each other.

What `yrdx audit verify` checks, from `yrdx.audit` or from an exported bundle (gateway.audit.bundle). The core,
:func:`verify_segments`, is pure: segments (model.parse_segment) in topic order and a trust
store in, a :class:`Report` out. A fault names the region, the sequence number and one of these kinds:

- ``edited``: a record's hash does not recompute, or a record was changed and rehashed so that the next record
  (or the signed checkpoint) no longer links to it;
- ``deleted``: sequence numbers are missing inside a chain (or a checkpoint / countersignature vouches for a
  record that is not there), unless the gap is a crash gap (below);
- ``reordered``: records stand in another order on the topic (or in the bundle) than their sequence numbers;
- ``forged``: a checkpoint whose signature does not verify, whose certificate is not trusted or is not the
  region's own, or a value on the topic that is not a segment;
- ``truncated``: the chain ends before a sequence number a signed checkpoint, or (on the complete topic)
  another region's ``countersigned`` record, vouches for;
- ``rewritten``: another region countersigned (seq, hash) and the chain holds another hash at that seq, or
  two validly signed records share one seq (a fork);
- ``unmatched``: a ``delivered`` record whose receiving side lacks ``received``/``verified``, whose origin has
  no ``accepted``/``published`` for the message, or whose envelope hash differs between the two sides.

A gap followed by a ``resumed`` record whose ``saved_seq`` ends right before it is a crash gap: records appended
in memory and never published, so nothing was acknowledged for them. It is a note, not a fault (unless a
signature vouches for a record inside it). Notes also say when a check cannot be decided yet (the origin's
chain has not moved past a delivery) or a chain does not start at seq 1.

A region with replicas writes a set of chains (`<REGION>/<instance_id>`, gateway.audit.model), each verified on
its own, and the cross-region checks look for a message's records in any chain of its origin. A replica's chain
that stops is *ended*, not truncated: cleanly after its `stopped` record (note `chain_ended`), or, when its head is
older than ENDED_AFTER behind the newest record on the topic with no `stopped` record, as killed (note
`crash_gap`: records it appended after its last published head were never acknowledged). Truncation is still a
fault where a checkpoint or another region's countersignature vouches for a seq beyond the chain's head. Faults
and notes name the chain (which is the region for a region's one chain).

In trail format 3 a record may be a batch record: one record of one stage whose `entries` name several messages
(gateway.audit.model). The chain checks above work on records as written, so an entry edited, dropped or moved
inside a batch record is an ``edited`` fault of that record (its hash covers the entries). The checks of a message
(``unmatched``, the notes about a delivery) work entry by entry, alike in every format: such a fault or note
names the chain, the seq of the record and the entry's position `entry` (`seq 41.3` in text; `entry` is null for
a whole record). `records` counts records as written, `entries` the records message by message.

`yrdx audit verify` (gateway.cli.audit) reads the topic with a gateway config's Kafka settings and trust;
`--bundle FILE` verifies an exported bundle with no Kafka and no config. Exit code 0 only when nothing is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from gateway.audit.model import (
    GENESIS,
    ORIGIN_STAGES,
    Segment,
    entries,
    parse_values,
    record_chain,
    record_hash,
    segment_fault,
)
from gateway.crypto.trust import TrustStore
from gateway.wire.envelope import timestamp_or_none

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "Note",
    "RegionSummary",
    "Report",
    "format_report",
    "position",
    "verify_segments",
    "verify_values",
]

FaultKind: TypeAlias = Literal["edited", "deleted", "reordered", "forged", "truncated", "rewritten", "unmatched"]
FAULT_KINDS: Final = ("edited", "deleted", "reordered", "forged", "truncated", "rewritten", "unmatched")

# How far an origin's chain must have moved past a delivery (by its records' clocks) before the absence of its
# `accepted`/`published` record is a fault rather than a record still on its way (heartbeats come every 10 s).
ORIGIN_GRACE: Final = dt.timedelta(seconds=60)
# A replica's chain whose head is this far behind the newest record on the topic, with no `stopped` record, has
# ended (its gateway was killed or lost): three missed heartbeats (a `checkpoint` record every 10 s).
ENDED_AFTER: Final = dt.timedelta(seconds=30)


def position(seq: int, entry: int | None) -> str:
    """Where a record stands in its chain: its seq, and for an entry of a batch record its position (`41.3`)."""
    return str(seq) if entry is None else f"{seq}.{entry}"


@dataclass(frozen=True, slots=True)
class Fault:
    region: str
    seq: int
    kind: FaultKind
    detail: str
    entry: int | None = None  # the position of the message's entry in a batch record (trail format 3)

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "seq": self.seq, "entry": self.entry, "kind": self.kind,
                "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.region} seq {position(self.seq, self.entry)}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Note:
    """Something an auditor should know that is not a fault: crash_gap, duplicate, chain_starts_late,
    unmatched_pending, unmatched_in_crash_gap, not_checked."""

    region: str
    seq: int
    kind: str
    detail: str
    entry: int | None = None  # as Fault.entry

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "seq": self.seq, "entry": self.entry, "kind": self.kind,
                "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.region} seq {position(self.seq, self.entry)}: {self.kind}: {self.detail}"


@dataclass(slots=True)
class RegionSummary:
    region: str
    records: int = 0
    first_seq: int = 0
    head_seq: int = 0
    last_checkpoint: int | None = None  # the newest checkpoint whose signature holds
    faults: int = 0
    entries: int = 0  # its signed records message by message (model.entries): `records` in formats 1 and 2

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "entries": self.entries, "first_seq": self.first_seq,
                "head_seq": self.head_seq, "last_checkpoint": self.last_checkpoint, "faults": self.faults}


@dataclass(slots=True)
class Report:
    faults: list[Fault]
    notes: list[Note]
    regions: dict[str, RegionSummary]
    segments: int
    records: int
    entries: int = 0  # as RegionSummary.entries, over every chain

    @property
    def ok(self) -> bool:
        return not self.faults

    def counts(self) -> dict[str, int]:
        """Faults per kind (every kind, zeros included)."""
        c = Counter(f.kind for f in self.faults)
        return {k: c.get(k, 0) for k in FAULT_KINDS}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "segments": self.segments, "records": self.records, "entries": self.entries,
            "counts": self.counts(),
            "regions": {r: s.to_json() for r, s in sorted(self.regions.items())},
            "faults": [f.to_json() for f in self.faults], "notes": [n.to_json() for n in self.notes],
        }


# --- the core ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """A record as kept for verification; in the checks of a message, one of its entries (model.entries)."""

    record: dict[str, Any]
    seq: int
    segment: int  # index of its segment in the input
    authentic: bool  # its segment's checkpoint holds
    entry: int | None = None  # the position of a batch record's entry; None for a whole record

    @property
    def where(self) -> str:
        return position(self.seq, self.entry)

    def messages(self) -> list[_Entry]:
        """This record message by message: one per entry of a batch record (its position taken from the batch
        record's shape, never from what a record says of itself), else itself."""
        if "entries" not in self.record:
            return [self]
        return [_Entry(e, self.seq, self.segment, self.authentic, i) for i, e in enumerate(entries(self.record))]

    @property
    def stage(self) -> str:
        return str(self.record.get("stage"))

    @property
    def hash(self) -> str:
        return str(self.record.get("hash"))

    @property
    def prev_hash(self) -> str:
        return str(self.record.get("prev_hash"))

    @property
    def at(self) -> dt.datetime | None:
        return timestamp_or_none(self.record.get("at"))


@dataclass(slots=True)
class _Chain:
    """One chain's records as kept for verification: in topic order, and by seq."""

    name: str  # the chain id: the region, or region/instance for a replica's chain
    region: str
    order: list[_Entry] = field(default_factory=list)
    by_seq: dict[int, _Entry] = field(default_factory=dict)
    signed: dict[int, _Entry] = field(default_factory=dict)  # the records of segments whose checkpoint holds
    checkpoints: dict[int, str] = field(default_factory=dict)  # seq -> hash, signatures that hold
    edited: set[int] = field(default_factory=set)
    forks: set[int] = field(default_factory=set)  # seqs with two validly signed, different records
    crash_gaps: list[tuple[_Entry, _Entry]] = field(default_factory=list)
    ended: list[tuple[_Entry, _Entry]] = field(default_factory=list)  # (last signed record, itself) when killed

    @property
    def first(self) -> int:
        """The first seq the region signed (forged records say nothing about the region's own chain)."""
        return min(self.signed) if self.signed else 0

    @property
    def head(self) -> int:
        return max(self.signed) if self.signed else 0


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _detail(entry: _Entry, key: str) -> object:
    detail = entry.record.get("detail")
    return detail.get(key) if isinstance(detail, dict) else None


def _span(lo: int, hi: int) -> str:
    return f"record {lo} is" if lo == hi else f"records {lo}..{hi} are"


class _Verifier:
    def __init__(self, trust: TrustStore, complete: bool, messages: Collection[str] | None) -> None:
        self.trust = trust
        self.complete = complete
        self.messages = messages
        self.faults: dict[tuple[str, int, int | None, str], Fault] = {}
        self.notes: list[Note] = []
        self.chains: dict[str, _Chain] = {}

    def fault(self, region: str, seq: int, kind: FaultKind, detail: str, entry: int | None = None) -> None:
        self.faults.setdefault((region, seq, entry, kind), Fault(region, seq, kind, detail, entry))

    def note(self, region: str, seq: int, kind: str, detail: str, entry: int | None = None) -> None:
        self.notes.append(Note(region, seq, kind, detail, entry))

    # 1. segments: signatures, then each region's records in topic order ----------------------------------------

    def load(self, segments: Sequence[Segment]) -> None:
        forged: list[tuple[int, Segment]] = []
        for i, seg in enumerate(segments):
            chain = self.chains.setdefault(seg.chain, _Chain(seg.chain, seg.region))
            cp = seg.checkpoint
            why = segment_fault(seg, self.trust)
            if why is None:
                chain.checkpoints.setdefault(cp.seq, cp.hash)
                self._add(chain, seg, i, authentic=True)
            else:
                seqs = [s for r in seg.records if (s := _int(r.get("seq"))) is not None]
                span = f" (records {min(seqs)}..{max(seqs)})" if seqs else ""
                self.fault(seg.chain, cp.seq, "forged", f"checkpoint {cp.seq}{span}: {why}")
                forged.append((i, seg))
        # An unauthenticated record never displaces a signed one: forged segments join only where they do not
        # collide (so that a re-signed but otherwise intact run does not also show up as a deletion).
        for i, seg in forged:
            self._add(self.chains[seg.chain], seg, i, authentic=False)
        for chain in self.chains.values():
            chain.order.sort(key=lambda e: e.segment)  # stable: keeps the order inside a segment
            self._covered(chain)

    @staticmethod
    def _covered(chain: _Chain) -> None:
        """A record of a segment whose own checkpoint fails is still the region's if a checkpoint that holds
        reaches it through the hash links (a later signed record's prev_hash commits to it)."""
        reached: _Entry | None = None
        for seq in sorted(chain.by_seq, reverse=True):
            e = chain.by_seq[seq]
            if chain.checkpoints.get(seq) == e.hash or (
                reached is not None and reached.seq == seq + 1 and reached.prev_hash == e.hash
            ):
                reached = e
                if not e.authentic:
                    e.authentic = True
                    chain.signed[seq] = e
            else:
                reached = None

    def _add(self, chain: _Chain, seg: Segment, index: int, authentic: bool) -> None:
        n = len(seg.records)
        again: list[int] = []
        for j, record in enumerate(seg.records):
            raw = record.get("seq")
            if isinstance(raw, int) and not isinstance(raw, bool):
                seq = raw
            else:
                seq = seg.checkpoint.seq - (n - 1 - j)  # where it stands, so that the damage is located
                self.fault(chain.name, seq, "edited", f"record {seq} has a malformed seq {raw!r}")
                chain.edited.add(seq)
            if record.get("region") != seg.region or record_chain(record) != seg.chain:
                self.fault(chain.name, seq, "edited",
                           f"record {seq} names chain {record_chain(record)!r} in a segment of {seg.chain}")
                chain.edited.add(seq)
            entry = _Entry(record, seq, index, authentic)
            known = chain.by_seq.get(seq)
            if known is None:
                chain.by_seq[seq] = entry
                chain.order.append(entry)
                if authentic:
                    chain.signed[seq] = entry
            elif not authentic:
                continue
            elif known.hash == entry.hash:
                again.append(seq)
            else:
                self.fault(chain.name, seq, "rewritten",
                           f"two validly signed records {seq} differ ({known.hash[:12]}… and {entry.hash[:12]}…)")
                chain.forks.add(seq)
        if again:  # a publish retried after an unclear failure: the same records once more
            self.note(chain.name, again[0], "duplicate",
                      f"{_span(again[0], again[-1])} on the topic again, identical (checkpoint {seg.checkpoint.seq})")

    # 2. one chain: order, hashes, links, gaps --------------------------------------------------------------------

    def check_chain(self, chain: _Chain) -> None:
        seqs = [e.seq for e in chain.order if e.authentic]  # where a forged record stands is no fault of the chain
        for i, (seq, want) in enumerate(zip(seqs, sorted(seqs), strict=True)):
            if seq != want:
                where = f"after record {seqs[i - 1]}" if i else "first"
                self.fault(chain.name, seq, "reordered", f"record {seq} stands {where}, in place of record {want}")
        for e in chain.order:
            if record_hash(e.prev_hash, e.record) != e.hash:
                self.fault(chain.name, e.seq, "edited", f"record {e.seq} ({e.stage}) does not match its hash")
                chain.edited.add(e.seq)
        ordered = sorted(chain.signed)  # the chain the region signed; forged records are faults of their own
        if ordered:
            first = chain.signed[ordered[0]]
            if first.seq == 1 and first.prev_hash != GENESIS and first.seq not in chain.edited:
                self.fault(chain.name, 1, "edited", "record 1 does not start from the genesis hash")
            elif self.complete and first.seq > 1:
                self.note(chain.name, first.seq, "chain_starts_late",
                          f"the topic holds {chain.name}'s chain from seq {first.seq} on")
        for p, q in zip(ordered, ordered[1:], strict=False):
            ep, eq = chain.signed[p], chain.signed[q]
            if q == p + 1:
                self._link(chain, ep, eq)
            elif all(s in chain.by_seq for s in range(p + 1, q)):
                continue  # filled by records whose checkpoint does not hold: reported as forged
            elif eq.stage == "resumed" and _int(_detail(eq, "saved_seq")) == q - 1:
                chain.crash_gaps.append((ep, eq))
                self.note(chain.name, p + 1, "crash_gap",
                          f"{_span(p + 1, q - 1)} not on the topic: the gateway restarted (record {q} resumed after "
                          f"saved seq {q - 1}); nothing was acknowledged for them")
            else:
                self.fault(chain.name, p + 1, "deleted", f"{_span(p + 1, q - 1)} missing between {p} and {q}")

    def _link(self, chain: _Chain, ep: _Entry, eq: _Entry) -> None:
        if eq.prev_hash == ep.hash or ep.seq in chain.edited or eq.seq in chain.edited:
            return
        if chain.checkpoints.get(ep.seq) == ep.hash:  # p is signed as it is: q was changed
            self.fault(chain.name, eq.seq, "edited", f"record {eq.seq} does not link to the signed record {ep.seq}")
            chain.edited.add(eq.seq)
        else:
            self.fault(chain.name, ep.seq, "edited",
                       f"record {ep.seq} ({ep.stage}) was changed and rehashed: record {eq.seq} links to another hash")
            chain.edited.add(ep.seq)

    # 3. what signatures vouch for: own checkpoints, the other regions' countersignatures --------------------------

    def check_vouchers(self) -> None:
        for chain in self.chains.values():
            for seq, head in sorted(chain.checkpoints.items()):
                self._vouched(chain, seq, head, f"{chain.name}'s signed checkpoint", own=True)
        for chain in self.chains.values():
            for e in chain.order:
                if e.stage != "countersigned" or not e.authentic:
                    continue
                of, at_seq, named = _detail(e, "of"), _int(_detail(e, "seq")), _detail(e, "hash")
                target = self.chains.get(str(of))
                if target is None or target.region == chain.region or at_seq is None or not isinstance(named, str):
                    continue
                self._vouched(target, at_seq, named, f"{chain.name}'s countersignature (record {e.seq})", own=False)

    def _vouched(self, chain: _Chain, seq: int, head: str, by: str, own: bool) -> None:
        entry = chain.signed.get(seq)
        if entry is not None:
            if entry.hash == head or seq in chain.edited or seq in chain.forks:
                return
            if own:
                self.fault(chain.name, seq, "edited", f"record {seq} is not the one {by} names")
                chain.edited.add(seq)
            else:
                self.fault(chain.name, seq, "rewritten",
                           f"{by} names hash {head[:12]}… for seq {seq}, the chain holds {entry.hash[:12]}…")
            return
        if not chain.signed:
            return
        if seq > chain.head:
            if own or self.complete:
                self.fault(chain.name, chain.head + 1, "truncated",
                           f"the chain ends at seq {chain.head} but {by} vouches for seq {seq}")
        elif seq > chain.first:
            self.fault(chain.name, seq, "deleted", f"record {seq} is missing though {by} vouches for it")

    # 4. messages across regions ----------------------------------------------------------------------------------

    def check_messages(self) -> None:
        # A message's records, entry by entry (a batch record's entry stands for the message's record there).
        here: dict[tuple[str, str], list[_Entry]] = defaultdict(list)  # (chain, message): one chain's records
        by_region: dict[tuple[str, str], list[_Entry]] = defaultdict(list)  # (region, message): all its chains
        damaged: set[str] = set()  # messages with an edited record: that record's fault says it all
        for chain in self.chains.values():
            for e in (m for r in chain.order for m in r.messages()):
                mid = e.record.get("message_id")
                if not isinstance(mid, str) or not mid:
                    continue
                if e.seq in chain.edited:
                    damaged.add(mid)
                elif e.authentic:
                    here[(chain.name, mid)].append(e)
                    by_region[(chain.region, mid)].append(e)
        for (name, mid), of_message in sorted(here.items()):
            if (self.messages is not None and mid not in self.messages) or mid in damaged:
                continue
            for d in of_message:
                if d.stage == "delivered":
                    self._delivered(self.chains[name], mid, d, of_message, by_region)

    def _delivered(self, chain: _Chain, mid: str, d: _Entry, here: list[_Entry],
                   by_region: dict[tuple[str, str], list[_Entry]]) -> None:
        name = chain.name
        sha = d.record.get("envelope_sha256")
        before = [e for e in here if e.seq < d.seq]  # a message is received, verified and delivered in one chain
        verified = [e for e in before if e.stage == "verified"]
        if not any(e.stage == "received" for e in before) or not verified:
            missing = "received" if verified else "verified"
            self.fault(name, d.seq, "unmatched", f"message {mid} delivered with no {missing} record before it",
                       d.entry)
            return
        for e in verified:
            if e.record.get("envelope_sha256") != sha:
                self.fault(name, d.seq, "unmatched",
                           f"message {mid}: record {e.where} (verified) names another envelope hash than the "
                           "delivery", d.entry)
                return
        origin = _detail(verified[-1], "sender")
        if not isinstance(origin, str) or origin == chain.region:
            return
        theirs = by_region.get((origin, mid), [])  # any of the origin's chains may have sent it
        sent = [e for e in theirs if e.stage in ORIGIN_STAGES]
        for e in sent:
            if e.record.get("envelope_sha256") != sha:
                self.fault(name, d.seq, "unmatched",
                           f"message {mid}: {record_chain(e.record)} record {e.where} ({e.stage}) names another "
                           "envelope hash", d.entry)
                return
        if sent:
            return
        decided = self._origin_decided(origin, mid, d, bool(theirs))
        if decided is not None:
            self.note(name, d.seq, "unmatched_pending", decided, d.entry)
            return
        received_at = min((t for e in before if e.stage == "received" and (t := e.at) is not None), default=d.at)
        for theirs_chain in self._chains_of(origin):
            for p, q in theirs_chain.crash_gaps + theirs_chain.ended:
                if p.at is not None and received_at is not None and p.at <= received_at:
                    gap = f"{p.seq + 1}..{q.seq - 1}" if q is not p else f"after {p.seq}"
                    self.note(name, d.seq, "unmatched_in_crash_gap",
                              f"message {mid} delivered here; {origin}'s accepted/published may be in the crash "
                              f"gap {gap} of {theirs_chain.name}", d.entry)
                    return
        self.fault(name, d.seq, "unmatched",
                   f"message {mid} delivered here but its origin {origin} has no accepted/published record for it",
                   d.entry)

    def _chains_of(self, region: str) -> list[_Chain]:
        """The region's chains that hold signed records."""
        return [c for c in self.chains.values() if c.region == region and c.signed]

    def _origin_decided(self, origin: str, mid: str, d: _Entry, origin_knows: bool) -> str | None:
        """None when the origin's records in view must hold its `accepted`/`published`; else why not (yet)."""
        chains = self._chains_of(origin)
        if not chains:
            if self.complete:
                return f"message {mid}: {origin}'s chain is not on the topic"
            return None  # the bundle names the message: its origin's records must be in it
        if origin_knows or not self.complete:
            return None
        late = [c for c in chains if c.first > 1]
        if late:
            return f"message {mid}: {late[0].name}'s chain on the topic starts at seq {late[0].first}"
        heads = [t for c in chains if (t := c.signed[c.head].at) is not None]
        at = d.at
        if not heads or at is None or max(heads) <= at + ORIGIN_GRACE:
            return f"message {mid}: {origin}'s chains have not moved past this delivery yet"
        return None

    def check_ends(self) -> None:
        """A replica's chain that stopped: cleanly (its last record `stopped`) or, with no such record and a head
        ENDED_AFTER behind the newest record on the topic, killed. Either is an end, never a truncation (that
        takes a signature vouching for more, check_vouchers)."""
        if not self.complete:
            return
        newest = max((t for c in self.chains.values() for e in c.signed.values() if (t := e.at) is not None),
                     default=None)
        for chain in self.chains.values():
            if chain.name == chain.region or not chain.signed:
                continue  # a region's one chain resumes after a restart (`resumed`, crash_gap above)
            last = chain.signed[chain.head]
            if last.stage == "stopped":
                self.note(chain.name, last.seq, "chain_ended",
                          f"{chain.name}'s chain ended at seq {last.seq}: the replica stopped cleanly")
            elif newest is not None and last.at is not None and last.at + ENDED_AFTER < newest:
                chain.ended.append((last, last))
                self.note(chain.name, last.seq + 1, "crash_gap",
                          f"{chain.name}'s chain ended at seq {last.seq} (its last signed head, "
                          f"{last.record.get('at')}) "
                          "with no stopped record: the replica was killed; records it appended after that head were "
                          "never published, and nothing was acknowledged for them")

    # 5. the report -----------------------------------------------------------------------------------------------

    def report(self, segments: int) -> Report:
        faults = sorted(self.faults.values(), key=_place)
        regions: dict[str, RegionSummary] = {}
        for name, chain in self.chains.items():
            signed = [s for s in chain.checkpoints if s in chain.signed]
            regions[name] = RegionSummary(
                name, len(chain.signed), chain.first, chain.head, max(signed) if signed else None,
                sum(1 for f in faults if f.region == name),
                sum(len(entries(e.record)) for e in chain.signed.values()),
            )
        notes = sorted(self.notes, key=_place)
        return Report(faults, notes, regions, segments, sum(s.records for s in regions.values()),
                      sum(s.entries for s in regions.values()))


def _place(f: Fault | Note) -> tuple[str, int, int, str]:
    """The order of faults and notes: chain, seq, entry (a whole record first), kind."""
    return f.region, f.seq, -1 if f.entry is None else f.entry, f.kind


def verify_segments(
    segments: Sequence[Segment],
    trust: TrustStore,
    *,
    complete: bool = True,
    messages: Collection[str] | None = None,
    extra_faults: Iterable[Fault] = (),
) -> Report:
    """Verify the chains in `segments` (topic order) against `trust`.

    `complete`: the segments are the whole topic (each chain from its start to its head), so a countersignature
    beyond a chain's head means truncation and a delivery must be matched by its origin once that origin's chain
    has moved past it. A bundle is not complete: it holds runs of each chain, and `messages` names the messages
    whose records it claims to hold in full (cross-region checks apply to those only).
    """
    v = _Verifier(trust, complete, messages)
    for f in extra_faults:
        v.fault(f.region, f.seq, f.kind, f.detail)
    v.load(segments)
    for chain in v.chains.values():
        v.check_chain(chain)
    v.check_vouchers()
    v.check_ends()
    v.check_messages()
    return v.report(len(segments))


def verify_values(
    values: Iterable[tuple[bytes | None, bytes, int]], trust: TrustStore, *, complete: bool = True
) -> Report:
    """Verify raw `yrdx.audit` values (key, value, offset) in topic order; a value that is not a segment is a
    `forged` fault of the region its key names (seq 0: it has no place in any chain)."""
    segments, bad = parse_values(values)
    faults = [Fault(b.region, 0, "forged", f"the value at offset {b.offset} is not an audit segment: {b.error}")
              for b in bad]
    return verify_segments(segments, trust, complete=complete, extra_faults=faults)


# --- output --------------------------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    """The report as text: one row per chain (a region's, or one per replica), then every fault and note, then
    the verdict."""
    width = max((len(name) + 2 for name in report.regions), default=8)
    width = max(width, 8)
    lines = [f"{'chain':<{width}}{'records':>9}{'first':>8}{'head':>8}{'checkpoint':>12}{'faults':>8}"]
    for name, s in sorted(report.regions.items()):
        cp = "-" if s.last_checkpoint is None else str(s.last_checkpoint)
        lines.append(f"{name:<{width}}{s.records:>9}{s.first_seq:>8}{s.head_seq:>8}{cp:>12}{s.faults:>8}")
    lines += [f"FAULT {f}" for f in report.faults]
    lines += [f"note  {n}" for n in report.notes]
    counts = ", ".join(f"{n} {k}" for k, n in report.counts().items() if n)
    verdict = "OK" if report.ok else f"FAILED ({counts})"
    # Batch records (format 3) name more messages than there are records: say how many entries they hold.
    held = f" ({report.entries} entries)" if report.entries != report.records else ""
    lines.append(f"{len(report.regions)} chains, {report.records} records{held} in {report.segments} segments: "
                 f"{verdict}")
    return "\n".join(lines)
