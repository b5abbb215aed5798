"""Audit bundles: the evidence about some messages in one file, to be verified offline, and proofs from them.

`yrdx audit export` picks records (a message with its receipts, a conversation, or a time window) and writes, for
each region, the contiguous run of its chain from the first picked record to the end of the segment holding the
last one, whose signed checkpoint covers the whole run through the hash links; plus the root certificates, the
gateway certificates that signed those checkpoints, the selection and the export time. Format:

    {"format": "yrdx-audit-bundle/2", "exported_at": "...",
     "selection": {"messages": [...], "conversation": ..., "from": ..., "to": ...},
     "certificates": {"roots": [PEM, ...], "gateways": [PEM, ...]},
     "segments": [{"region", "offset", "records": [...], "checkpoint": {"seq", "hash", "jws"}}, ...]}

Messages are selected entry by entry (model.entries), but records travel whole, as the chain holds them: a batch
record of trail format 3 comes with all its entries, since its hash (and so the checkpoint) covers every one.
The other messages' entries that come along are ids, hashes and codes only, never personal data (as every audit
record: gateway.audit.trail), and the selection does not name them. A bundle holding a batch record is
`yrdx-audit-bundle/2`: a reader of /1 would take its format-3 segments for damaged ones, so it must refuse the file
instead. A bundle of records in formats 1 and 2 only stays `yrdx-audit-bundle/1`, readable by older tools; both
are read.

`yrdx audit verify --bundle FILE` checks it with gateway.audit.verify on a machine with no Kafka and no
gateway; `yrdx audit prove --bundle FILE --envelope FILE` shows that an envelope a platform kept is, byte for
byte, the one whose hash every region recorded (`prove` returns the evidence, `format_proof` words it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.audit.journey import journey
from gateway.audit.model import (
    ORIGIN_STAGES,
    AuditFormatError,
    AuditRecord,
    Segment,
    all_entries,
    parse_segment,
    record_chain,
    segment_fault,
)
from gateway.audit.verify import Fault, Report, position, verify_segments
from gateway.crypto.jws import JwsError, parse_detached
from gateway.crypto.trust import TrustError, TrustStore
from gateway.wire.envelope import timestamp_or_none, utc_timestamp

__all__ = [
    "BUNDLE_FORMAT",
    "READ_BUNDLE_FORMATS",
    "RECORD_BUNDLE_FORMAT",
    "Bundle",
    "BundleError",
    "Evidence",
    "Proof",
    "Selection",
    "build_bundle",
    "bundle_trust",
    "format_proof",
    "load_bundle",
    "prove",
    "select_records",
    "verify_bundle",
]

BUNDLE_FORMAT: Final = "yrdx-audit-bundle/2"  # a bundle that holds a batch record (trail format 3)
RECORD_BUNDLE_FORMAT: Final = "yrdx-audit-bundle/1"  # one record per message only (formats 1 and 2)
READ_BUNDLE_FORMATS: Final = (RECORD_BUNDLE_FORMAT, BUNDLE_FORMAT)

# Where a message's envelope hash is recorded (model.ORIGIN_STAGES at its origin, these at its destination), and
# what must match the envelope a platform kept.
DESTINATION_STAGES: Final = ("received", "verified", "delivered")
MUST_MATCH: Final = frozenset({"accepted", "published", "verified", "delivered", "receipt_sent", "receipt_received"})

RecordKey = tuple[str, int, str]  # region, seq, hash


class BundleError(ValueError):
    """A file that is not a readable bundle (a damaged record inside one is a fault, not this)."""


@dataclass(frozen=True, slots=True)
class Selection:
    messages: tuple[str, ...] = ()
    conversation: str | None = None
    start: str | None = None
    end: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"messages": list(self.messages), "conversation": self.conversation, "from": self.start,
                "to": self.end}


@dataclass(slots=True)
class Bundle:
    segments: list[dict[str, Any]]  # as in the file: parsed only when verified, a damaged one is a fault
    roots: list[x509.Certificate]
    certificates: list[x509.Certificate]
    selection: Selection
    exported_at: str
    source: Path | None = field(default=None, compare=False)


# --- export -------------------------------------------------------------------------------------------------


def _seq(record: dict[str, Any]) -> int:
    seq = record.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1


def _key(record: dict[str, Any]) -> RecordKey:
    return record_chain(record), _seq(record), str(record.get("hash"))


def select_records(
    segments: Sequence[Segment],
    *,
    message: str | None = None,
    conversation: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> tuple[set[RecordKey], tuple[str, ...]]:
    """The records picked (as chain, seq, hash) and the messages whose records they hold in full.

    A message brings its receipts' records too (journey.journey), a conversation all records with that
    correlation id and those of their messages, a window every record whose `at` falls in it plus the other
    records of the messages it touches (so that both sides of each message are in the bundle). Messages are
    looked for entry by entry; a batch record is picked as a whole (an entry's key is its record's).
    """
    records = all_entries(r for seg in segments for r in seg.records)
    if message is not None:
        ids = {message}
        window: list[dict[str, Any]] = []
    elif conversation is not None:
        ids = {str(r["message_id"]) for r in records if r.get("correlation_id") == conversation and r["message_id"]}
        window = []
    else:
        window = [
            r for r in records
            if (t := timestamp_or_none(r.get("at"))) is not None
            and (start is None or t >= start) and (end is None or t <= end)
        ]
        ids = {str(r["message_id"]) for r in window if r.get("message_id")}
    picked = journey(records, message_ids=ids) if ids else []
    keys = {_key(r) for r in (*picked, *window)}
    messages = {str(r["message_id"]) for r in picked if r.get("message_id")} | ids
    return keys, tuple(sorted(messages))


def build_bundle(
    segments: Sequence[Segment], trust: TrustStore, keys: set[RecordKey], selection: Selection
) -> dict[str, Any]:
    """Each chain's run (a region's, or each of its replicas') from its first picked record to the first
    checkpoint that holds at or after its last one, with the certificates needed to check those checkpoints."""
    by_chain: dict[str, list[Segment]] = defaultdict(list)
    for seg in segments:
        by_chain[seg.chain].append(seg)
    out: list[dict[str, Any]] = []
    for chain in sorted(by_chain):
        segs = by_chain[chain]
        hits = [i for i, seg in enumerate(segs) if any(_key(r) in keys for r in seg.records)]
        if not hits:
            continue
        first, last = hits[0], hits[-1]
        while last + 1 < len(segs) and not _holds(segs[last], trust):
            last += 1
        for i in range(first, last + 1):
            seg = segs[i]
            records = seg.records
            if i == first:
                start = next(j for j, r in enumerate(records) if _key(r) in keys)
                records = records[start:]
            out.append({**Segment(seg.region, records, seg.checkpoint).to_json(), "offset": seg.offset})
    out.sort(key=lambda s: s["offset"])  # topic order
    gateways: dict[str, str] = {}
    for s in out:
        try:
            thumbprint = parse_detached(s["checkpoint"]["jws"]).thumbprint
        except JwsError:
            continue
        cert = trust.certificate(thumbprint)
        if cert is not None:
            gateways.setdefault(thumbprint, _pem(cert))
    batched = any("entries" in r for s in out for r in s["records"])
    return {
        "format": BUNDLE_FORMAT if batched else RECORD_BUNDLE_FORMAT,
        "exported_at": utc_timestamp(),
        "selection": selection.to_json(),
        "certificates": {"roots": [_pem(c) for c in trust.roots], "gateways": list(gateways.values())},
        "segments": out,
    }


def _holds(seg: Segment, trust: TrustStore) -> bool:
    return segment_fault(seg, trust) is None


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- reading and verifying -------------------------------------------------------------------------------------


def load_bundle(path: Path) -> Bundle:
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as e:
        raise BundleError(f"not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") not in READ_BUNDLE_FORMATS:
        raise BundleError(f"not a bundle (format {' or '.join(map(repr, READ_BUNDLE_FORMATS))} expected)")
    certs, sel, segments = doc.get("certificates"), doc.get("selection"), doc.get("segments")
    if not isinstance(certs, dict) or not isinstance(sel, dict) or not isinstance(segments, list):
        raise BundleError("a bundle needs certificates, selection and segments")
    messages = sel.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
        raise BundleError("selection.messages must be a list of message ids")
    return Bundle(
        segments=[s if isinstance(s, dict) else {} for s in segments],
        roots=_certificates(certs.get("roots"), "roots"),
        certificates=_certificates(certs.get("gateways"), "gateways"),
        selection=Selection(tuple(messages), _opt_str(sel.get("conversation")), _opt_str(sel.get("from")),
                            _opt_str(sel.get("to"))),
        exported_at=str(doc.get("exported_at", "")),
        source=Path(path),
    )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _certificates(pems: object, name: str) -> list[x509.Certificate]:
    if not isinstance(pems, list) or not all(isinstance(p, str) for p in pems):
        raise BundleError(f"certificates.{name} must be a list of PEM certificates")
    try:
        return [c for p in pems for c in x509.load_pem_x509_certificates(p.encode("ascii"))]
    except ValueError as e:
        raise BundleError(f"certificates.{name}: {e}") from e


def bundle_trust(bundle: Bundle, ca_files: Sequence[Path], warn: Callable[[str], None]) -> TrustStore:
    """The auditor's roots from `ca_files`, or (with a warning) the bundle's own; then the bundle's gateway
    certificates, each accepted only if one of those roots issued it. `warn` is given each warning as it arises,
    so that it comes before the BundleError raised when there is no root at all."""
    if ca_files:
        roots = [c for p in ca_files for c in x509.load_pem_x509_certificates(Path(p).read_bytes())]
    else:
        roots = bundle.roots
        names = "; ".join(r.subject.rfc4514_string() for r in roots) or "none"
        warn(f"WARNING: trusting the root certificates inside the bundle ({names}); a bundle can vouch for "
             "itself this way, so pass --ca FILE to verify against roots you hold")
    if not roots:
        raise BundleError("no trust roots: the bundle holds none and no --ca was given")
    try:
        trust = TrustStore(roots)
    except ValueError as e:
        raise BundleError(f"trust roots: {e}") from e
    for cert in bundle.certificates:
        try:
            trust.add_certificate(cert)
        except TrustError as e:
            warn(f"warning: a gateway certificate of the bundle is not accepted: {e}")
    return trust


def _segments(bundle: Bundle) -> tuple[list[Segment], list[Fault]]:
    segments: list[Segment] = []
    damaged: list[Fault] = []
    for i, doc in enumerate(bundle.segments):
        try:
            segments.append(parse_segment(orjson.dumps(doc), int(doc.get("offset", -1) or -1)))
        except (AuditFormatError, TypeError, ValueError) as e:
            cp = doc.get("checkpoint")
            seq = cp.get("seq") if isinstance(cp, dict) else None
            damaged.append(Fault(str(doc.get("region", "?")), seq if isinstance(seq, int) else 0, "edited",
                                 f"segment {i} of the bundle is damaged: {e}"))
    return segments, damaged


def verify_bundle(bundle: Bundle, trust: TrustStore) -> Report:
    """The bundle's runs verified on their own: chains, checkpoints, and the cross-region checks for the
    messages the selection names (their records at every region are in the bundle)."""
    segments, damaged = _segments(bundle)
    return verify_segments(segments, trust, complete=False, messages=set(bundle.selection.messages),
                           extra_faults=damaged)


# --- prove ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """One record of the bundle about the envelope's message (its entry, in a batch record), and whether it names
    the envelope's hash."""

    at: str
    region: str
    seq: int
    stage: str
    matches: bool
    checkpoint: tuple[int, str] | None  # the first checkpoint that holds at or after it: (seq, who signed it)
    entry: int | None = None  # its position in a batch record (trail format 3)

    @property
    def where(self) -> str:
        return position(self.seq, self.entry)


@dataclass(frozen=True, slots=True)
class Proof:
    """What `prove` found: the envelope (size, SHA-256 and, when it is one, its id, type, sender and recipient),
    the evidence in time order, the bundle's report and every problem; proved only when there is none."""

    size: int
    sha256: str
    message_id: str | None  # None: the bytes are not an envelope
    type: object = None
    sender: object = None
    recipient: object = None
    evidence: tuple[Evidence, ...] = ()
    report: Report | None = None
    problems: tuple[str, ...] = ()

    @property
    def proved(self) -> bool:
        return self.message_id is not None and not self.problems


def prove(bundle: Bundle, trust: TrustStore, envelope: bytes) -> Proof:
    """The chain of evidence that `envelope` (exact bytes) is the message the bundle's records describe; proved
    only if its hash is the one recorded at the origin and at the destination and the bundle verifies."""
    sha = hashlib.sha256(envelope).hexdigest()
    try:
        doc = orjson.loads(envelope)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return Proof(len(envelope), sha, None)
    mid, sender, recipient = doc["id"], doc.get("from"), doc.get("to")

    report = verify_bundle(bundle, trust)
    segments, _ = _segments(bundle)
    signed_by = _signatures(segments, trust)
    mine: list[tuple[str, str, AuditRecord]] = [(seg.region, seg.chain, r) for seg in segments for r in seg.entries()
                                                if r.get("message_id") == mid]
    mine.sort(key=lambda x: (str(x[2].get("at")), x[1], _seq(x[2]), x[2].get("entry", -1)))
    problems: list[str] = []
    evidence: list[Evidence] = []
    for _, chain, r in mine:  # evidence names the chain (the region, or one of its replicas')
        same = r.get("envelope_sha256") == sha
        seq = _seq(r)
        cover = next(((s, who) for s, who in signed_by.get(chain, []) if s >= seq), None)
        e = Evidence(str(r.get("at")), chain, seq, str(r.get("stage")), same, cover, r.get("entry"))
        evidence.append(e)
        if r.get("stage") in MUST_MATCH and not same:
            problems.append(f"{chain} record {e.where} ({r.get('stage')}) names another envelope hash")
    origin = [r for region, _, r in mine if r.get("stage") in ORIGIN_STAGES and region == sender]
    destination = [(region, r) for region, _, r in mine if r.get("stage") in DESTINATION_STAGES]
    if not origin:
        problems.append(f"the bundle holds no accepted/published record of {mid} at its origin {sender}")
    if not any(r.get("stage") == "delivered" and region == recipient for region, r in destination):
        problems.append(f"the bundle holds no delivered record of {mid} at its destination {recipient}")
    if destination and not any(r.get("stage") == "received" and r.get("envelope_sha256") == sha
                               for _, r in destination):
        problems.append(f"no received record of {mid} names this envelope's hash")
    if not report.ok:
        problems.extend(f"bundle fault: {f}" for f in report.faults)
    return Proof(len(envelope), sha, mid, doc.get("type"), sender, recipient, tuple(evidence), report,
                 tuple(problems))


def format_proof(proof: Proof) -> str:
    """The proof as `yrdx audit prove` prints it: the envelope, the evidence, the bundle, then the verdict."""
    if proof.message_id is None:
        return (f"envelope: {proof.size} bytes, sha256 {proof.sha256}: not an envelope (no message id)\n"
                "NOT PROVED")
    mid = proof.message_id
    lines = [f"envelope: message {mid} ({proof.type}) {proof.sender} -> {proof.recipient}, {proof.size} bytes, "
             f"sha256 {proof.sha256}", "evidence:"]
    for e in proof.evidence:
        signed = f"checkpoint {e.checkpoint[0]} signed by {e.checkpoint[1]}" if e.checkpoint else \
            "no checkpoint that holds"
        mark = "matches" if e.matches else "DIFFERS"
        lines.append(f"  {e.at}  {e.region}  {e.where:>6}  {e.stage:<16} envelope sha256 {mark:<8} {signed}")
    report = proof.report
    if report is not None and report.ok:
        lines.append(f"bundle: {report.records} records in {report.segments} segments verify "
                     f"({', '.join(sorted(report.regions))})")
    lines += [f"  - {p}" for p in proof.problems]
    if proof.problems:
        lines.append(f"NOT PROVED: the envelope is not shown to be the one that travelled as {mid}")
    else:
        lines.append(f"PROVED: this envelope is exactly the one that travelled as {mid} from {proof.sender} to "
                     f"{proof.recipient}")
    return "\n".join(lines)


def _signatures(segments: Sequence[Segment], trust: TrustStore) -> dict[str, list[tuple[int, str]]]:
    """Per chain, the checkpoints that hold (seq, who signed), in seq order."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for seg in segments:
        if not _holds(seg, trust):
            continue
        header = parse_detached(seg.checkpoint.jws).header
        out[seg.chain].append((seg.checkpoint.seq, f"{seg.region} ({header.get('kid')})"))
    for items in out.values():
        items.sort()
    return out
