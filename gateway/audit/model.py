"""The audit trail's data model: records, segments and checkpoints, their hashes, parsing and signature checks.

It is shared by the gateways that write the trail and the auditors' tools that read it.

A gateway appends records to its own hash chain and publishes them on `yrdx.audit` in *segments*: one Kafka
record (key = region) holding consecutive records and a checkpoint, a detached JWS by the gateway's key over
`{"hash", "region", "seq"}` of the segment's last record. Because each record's hash covers the previous one,
that one signature authenticates every record of the chain up to it.

A region's gateways may be several replicas (config `instance_id`): each then writes a chain of its own, chain id
`<REGION>/<instance_id>` (e.g. `SH/yrdx-sh-0`), in trail format 2: the segment and each of its records carry
`"chain"`, the segment `"format": 2`, and the checkpoint signs `{"chain", "hash", "region", "seq"}` with the
region's key. A gateway without an instance id writes format 1 exactly as before (no `format`, no `chain`: its
chain id is the region), so older trails verify unchanged. A region's chains are verified as a set.

Format 3 (what the gateways write now) has one record per stage and batch: the messages of one ingress group or
one consumed batch that reached the same stage share a *batch record* whose `entries` name each of them,
`[message_id, correlation_id, envelope_sha256, detail]`, inside the record's hash: every message keeps an entry of
its own that the chain and the checkpoint's signature cover, at one record (one SHA-256, one timestamp) per stage
and batch instead of one per message. A batch record's own message_id and correlation_id are "", its
envelope_sha256 null and its detail {}. Records without a message (checkpoint, countersigned, resumed, stopped,
an unverified rejection) stay single records. Readers see a trail message by message through `entries()`: a
batch record's entries as records of their own, each with the batch record's seq, at, prev_hash and hash and its
position `entry`; formats 1 and 2 read the same way, so every tool reads all three formats alike.

Record fields: seq, region, message_id, correlation_id, stage, at, envelope_sha256, detail, prev_hash, hash (and
`entries` in a batch record). `hash` = SHA-256 over prev_hash (ASCII hex) followed by the record's other fields
serialized with sorted keys.

Stages with a special meaning for verification:
- `checkpoint`: a heartbeat appended periodically so that an idle gateway still publishes a signed head;
- `countersigned`: this gateway saw another region's signed checkpoint; detail {of, seq, hash} — a region that
  later rewrites or truncates its chain contradicts the countersignatures in the others' chains;
- `stopped`: last record of a replica's chain at a clean stop (trail format 2): the chain ends there on purpose;
- `resumed`: first record after a restart; detail {saved_seq}: records after the last one published before the
  crash and up to saved_seq were appended in memory but never published (nothing was acknowledged for them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from gateway.crypto.jws import JwsError, parse_detached, verify_detached
from gateway.crypto.trust import TrustError, TrustStore
from gateway.wire.envelope import timestamp_or_none

GENESIS = "0" * 64

STAGES = frozenset({
    "accepted", "published", "publish_failed", "received", "verified", "rejected", "delivered", "receipt_sent",
    "receipt_received", "dead_lettered", "replayed", "checkpoint", "countersigned", "resumed", "stopped",
    "late_result",  # a request's result that came after its deadline (gateway/relay/requests_replies.py)
    # files (README "Files (claim checks)"), by file id: its manifest published at the sender, then judged at the
    # destination (complete, or refused with the reason)
    "file_sent", "file_received", "file_refused",
    # a message set aside until its claim-checked files are decided, and taken back (gateway/files/claims.py)
    "parked", "unparked",
})

# Format 3: batch records (`entries`), in a region's one chain or a replica's (segment and records name `chain`).
# Format 2: a replica's chain of one record per message; format 1, without a `format` key, is the one chain of a
# region with a single gateway, one record per message. The gateways write format 3; all three are read.
TRAIL_FORMAT: Final = 3
REPLICA_FORMAT: Final = 2  # what a replica wrote before batch records
READ_FORMATS: Final = frozenset({1, 2, 3})
CHAIN_SEPARATOR: Final = "/"

RECORD_FIELDS = (
    "seq", "region", "message_id", "correlation_id", "stage", "at", "envelope_sha256", "detail", "prev_hash",
)

# The stages at which a message's origin records the hash of the envelope it sent: a delivery is matched against
# them (`yrdx audit verify`), and `yrdx audit prove` looks for them at the sender.
ORIGIN_STAGES: Final = frozenset({"accepted", "published"})

# A batch record's entry, in this order: one list per message (keys would double the bytes of a segment).
ENTRY_FIELDS: Final = ("message_id", "correlation_id", "envelope_sha256", "detail")

AuditRecord = dict[str, Any]  # one record of a chain: the RECORD_FIELDS and its `hash` (and `entries`)


class AuditFormatError(ValueError):
    """A segment or record is not in the shape the gateways write."""


def record_hash(prev_hash: str, body: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the record's other fields as serialized (sorted keys, no `hash`)."""
    fields = {k: v for k, v in body.items() if k != "hash"} if "hash" in body else body  # appending: no copy
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def entries(record: AuditRecord) -> list[AuditRecord]:
    """A record message by message: a batch record's entries, each as a record with the batch record's seq, at,
    prev_hash and hash and its position `entry`; any other record as itself."""
    listed = record.get("entries")
    if listed is None:
        return [record]
    base = {k: v for k, v in record.items() if k != "entries"}
    return [{**base, "message_id": mid, "correlation_id": corr, "envelope_sha256": sha, "detail": detail,
             "entry": i} for i, (mid, corr, sha, detail) in enumerate(listed)]


def all_entries(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    """`entries` of each record, in chain order."""
    return [e for r in records for e in entries(r)]


def chain_id(region: str, instance_id: str | None) -> str:
    """The id of a gateway's chain: its region, or `<REGION>/<instance_id>` for one replica of several."""
    return region if instance_id is None else f"{region}{CHAIN_SEPARATOR}{instance_id}"


def chain_region(chain: str) -> str:
    """The region a chain id belongs to."""
    return chain.split(CHAIN_SEPARATOR, 1)[0]


def record_chain(record: Mapping[str, Any]) -> str:
    """The chain a record says it belongs to (format 1 records name only their region)."""
    return str(record.get("chain", record.get("region")))


def checkpoint_bytes(region: str, seq: int, head: str, chain: str | None = None) -> bytes:
    """What a checkpoint signature covers; a replica's chain (format 2) adds its chain id."""
    signed: dict[str, Any] = {"region": region, "seq": seq, "hash": head}
    if chain is not None and chain != region:
        signed["chain"] = chain
    return orjson.dumps(signed, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    region: str
    seq: int
    hash: str
    jws: str
    chain: str = ""  # "" = the region's one chain (format 1)

    def __post_init__(self) -> None:
        if not self.chain:
            object.__setattr__(self, "chain", self.region)


@dataclass(frozen=True, slots=True)
class Segment:
    region: str
    records: list[dict[str, Any]]
    checkpoint: Checkpoint
    offset: int = -1  # position on yrdx.audit when read back from Kafka

    @property
    def chain(self) -> str:
        return self.checkpoint.chain

    @property
    def format(self) -> int:
        """The trail format its records are in: 3 when one is a batch record, else 2 for a replica's chain."""
        if any("entries" in r for r in self.records):
            return TRAIL_FORMAT
        return REPLICA_FORMAT if self.chain != self.region else 1

    def entries(self) -> list[AuditRecord]:
        """Its records message by message (`entries`)."""
        return all_entries(self.records)

    def to_json(self) -> dict[str, Any]:
        cp = self.checkpoint
        doc: dict[str, Any] = {"region": self.region, "records": self.records,
                               "checkpoint": {"seq": cp.seq, "hash": cp.hash, "jws": cp.jws}}
        version = self.format
        if version != 1:
            doc["format"] = version
        if self.chain != self.region:
            doc["chain"] = self.chain
        return doc


def parse_segment(value: bytes, offset: int = -1) -> Segment:
    """A `yrdx.audit` value as a segment; AuditFormatError when it is not in the shape the gateways write."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise AuditFormatError(f"segment is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise AuditFormatError("segment is not a JSON object")
    region, records, cp = doc.get("region"), doc.get("records"), doc.get("checkpoint")
    if not isinstance(region, str) or not isinstance(records, list) or not records or not isinstance(cp, dict):
        raise AuditFormatError("segment needs region, a non-empty records list and a checkpoint")
    chain = _segment_chain(doc, region)
    for r in records:
        if not isinstance(r, dict) or not all(k in r for k in (*RECORD_FIELDS, "hash")):
            raise AuditFormatError("a record lacks one of the record fields")
        if "entries" in r:
            if doc.get("format") != TRAIL_FORMAT:
                raise AuditFormatError(f"a batch record in a segment of format {doc.get('format', 1)!r}")
            _check_entries(r["entries"])
            if (r["message_id"], r["correlation_id"], r["envelope_sha256"], r["detail"]) != ("", "", None, {}):
                raise AuditFormatError("a batch record names its messages only in its entries")
    seq, head, jws = cp.get("seq"), cp.get("hash"), cp.get("jws")
    if not isinstance(seq, int) or not isinstance(head, str) or not isinstance(jws, str):
        raise AuditFormatError("checkpoint needs seq, hash and jws")
    return Segment(region, records, Checkpoint(region, seq, head, jws, chain), offset)


def _check_entries(listed: object) -> None:
    if not isinstance(listed, list) or not listed:
        raise AuditFormatError("a batch record needs a non-empty entries list")
    for e in listed:
        if not (isinstance(e, list) and len(e) == len(ENTRY_FIELDS) and isinstance(e[0], str) and e[0]
                and isinstance(e[1], str) and (e[2] is None or isinstance(e[2], str)) and isinstance(e[3], dict)):
            raise AuditFormatError("a batch record's entry is not [message_id, correlation_id, envelope_sha256, "
                                   "detail]")


def _segment_chain(doc: dict[str, Any], region: str) -> str:
    """The chain id of a segment: its region in format 1; in format 2 `<region>/<instance>`; in format 3 either
    (`chain` only for a replica's)."""
    version = doc.get("format", 1)
    if isinstance(version, bool) or version not in READ_FORMATS:
        raise AuditFormatError(f"unknown trail format {version!r} (this version reads 1, 2 and {TRAIL_FORMAT})")
    chain = doc.get("chain")
    if chain is None:
        if version == REPLICA_FORMAT:
            raise AuditFormatError("a segment of format 2 needs the chain it belongs to")
        return region
    if version == 1 or not isinstance(chain, str) or chain_region(chain) != region or chain == region:
        raise AuditFormatError(f"chain {str(chain)[:80]!r} is not a chain id of region {region} in format {version}")
    return chain


@dataclass(frozen=True, slots=True)
class NotASegment:
    """A value of `yrdx.audit` that is not a segment: its key, its offset and why."""

    key: bytes | None
    offset: int
    error: str

    @property
    def region(self) -> str:
        """The region the value's key names ("?" without a key)."""
        return self.key.decode("utf-8", "replace") if self.key else "?"


def parse_values(values: Iterable[tuple[bytes | None, bytes, int]]) -> tuple[list[Segment], list[NotASegment]]:
    """(key, value, offset) of `yrdx.audit` records, in topic order -> the segments, and the values that are not."""
    segments: list[Segment] = []
    bad: list[NotASegment] = []
    for key, value, offset in values:
        try:
            segments.append(parse_segment(value, offset))
        except AuditFormatError as e:
            bad.append(NotASegment(key, offset, str(e)))
    return segments, bad


def checkpoint_fault(cp: Checkpoint, trust: TrustStore, at: datetime) -> str | None:
    """Why a checkpoint's signature does not hold (None when it does): the JWS must verify over the checkpoint
    with a certificate the trust store accepts at `at` (when the checkpoint was made) and of the same region."""
    try:
        jws = parse_detached(cp.jws)
        signer = trust.signer(jws.header, at)
    except (JwsError, TrustError) as e:
        return f"checkpoint signer not trusted: {e}"
    if signer.region != cp.region:
        return f"checkpoint of {cp.region} signed by a certificate of {signer.region}"
    if not verify_detached(jws, checkpoint_bytes(cp.region, cp.seq, cp.hash, cp.chain), signer.public_key):
        return "checkpoint signature does not verify"
    return None


def checkpoint_time(seg: Segment) -> datetime:
    """When the segment's checkpoint was made: the `at` of the record it names (the signing certificate must be
    valid then), else of the segment's last record; now when neither holds a timestamp."""
    named = next((r for r in seg.records if r.get("seq") == seg.checkpoint.seq), seg.records[-1])
    return timestamp_or_none(named.get("at")) or datetime.now(UTC)


def segment_fault(seg: Segment, trust: TrustStore) -> str | None:
    """Why the segment's checkpoint does not hold (None when it does): `checkpoint_fault` at `checkpoint_time`.
    The one check that `yrdx audit verify`, bundles, the audit index and exports share."""
    return checkpoint_fault(seg.checkpoint, trust, checkpoint_time(seg))


def segment_break(seg: Segment) -> str | None:
    """Why the segment's records are not the run its checkpoint signs (None when they are): records of the
    segment's region, each matching its hash and linked to the one before with the next seq, the last one the
    record the checkpoint names. Only then does the checkpoint's one signature cover every record of it."""
    prev: dict[str, Any] | None = None
    for r in seg.records:
        seq = r.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return f"a record has a malformed seq {seq!r}"
        if r.get("region") != seg.region:
            return f"record {seq} names region {r.get('region')!r} in a segment of {seg.region}"
        if record_chain(r) != seg.chain:
            return f"record {seq} names chain {record_chain(r)!r} in a segment of {seg.chain}"
        if record_hash(str(r.get("prev_hash")), r) != r.get("hash"):
            return f"record {seq} does not match its hash"
        if prev is not None and (seq != prev["seq"] + 1 or r.get("prev_hash") != prev["hash"]):
            return f"record {seq} does not follow record {prev['seq']}"
        prev = r
    if prev is None or (prev["seq"], prev.get("hash")) != (seg.checkpoint.seq, seg.checkpoint.hash):
        return f"the checkpoint names record {seg.checkpoint.seq}, not the segment's last one"
    return None
