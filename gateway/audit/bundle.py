"""Audit bundles (DESIGN.md section 6): the evidence about some messages in one file, for an offline audit.

`yrdx audit export` picks records (a message with its receipts, a conversation, or a time window) and writes, for
each region, the contiguous run of its chain from the first picked record to the end of the segment holding the
last one, whose signed checkpoint covers the whole run through the hash links; plus the root certificates, the
gateway certificates that signed those checkpoints, the selection and the export time. Format:

    {"format": "yrdx-audit-bundle/1", "exported_at": "...",
     "selection": {"messages": [...], "conversation": ..., "from": ..., "to": ...},
     "certificates": {"roots": [PEM, ...], "gateways": [PEM, ...]},
     "segments": [{"region", "offset", "records": [...], "checkpoint": {"seq", "hash", "jws"}}, ...]}

`yrdx audit verify --bundle FILE` checks it with gateway/audit_verify.py on a machine with no Kafka and no
gateway; `yrdx audit prove --bundle FILE --envelope FILE` shows that an envelope a platform kept is, byte for
byte, the one whose hash every region recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.audit.model import AuditFormatError, Segment, parse_segment, segment_fault
from gateway.audit.verify import Fault, Report, read_trail, verify_segments
from gateway.crypto.jws import JwsError, parse_detached
from gateway.crypto.trust import TrustError, TrustStore
from gateway.wire.envelope import timestamp_or_none, utc_timestamp

__all__ = [
    "BUNDLE_FORMAT",
    "Bundle",
    "BundleError",
    "Selection",
    "add_bundle_cli",
    "build_bundle",
    "bundle_trust",
    "load_bundle",
    "prove",
    "select_records",
    "verify_bundle",
]

BUNDLE_FORMAT: Final = "yrdx-audit-bundle/1"

# Where a message's envelope hash is recorded, and what must match the envelope a platform kept.
ORIGIN_STAGES: Final = ("accepted", "published")
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
    return str(record.get("region")), _seq(record), str(record.get("hash"))


def select_records(
    segments: Sequence[Segment],
    *,
    message: str | None = None,
    conversation: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> tuple[set[RecordKey], tuple[str, ...]]:
    """The records picked (as region, seq, hash) and the messages whose records they hold in full.

    A message brings its receipts' records too (gateway.audit.journey.journey), a conversation all records with that
    correlation id and those of their messages, a window every record whose `at` falls in it plus the other
    records of the messages it touches (so that both sides of each message are in the bundle).
    """
    from gateway.audit.journey import journey

    records = [r for seg in segments for r in seg.records]
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
    """Each region's run from its first picked record to the first checkpoint that holds at or after its last
    one, with the certificates needed to check those checkpoints."""
    by_region: dict[str, list[Segment]] = defaultdict(list)
    for seg in segments:
        by_region[seg.region].append(seg)
    out: list[dict[str, Any]] = []
    for region in sorted(by_region):
        segs = by_region[region]
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
            out.append({"region": region, "offset": seg.offset, "records": records,
                        "checkpoint": {"seq": seg.checkpoint.seq, "hash": seg.checkpoint.hash,
                                       "jws": seg.checkpoint.jws}})
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
    return {
        "format": BUNDLE_FORMAT,
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
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"not a bundle (format {BUNDLE_FORMAT!r} expected)")
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


def bundle_trust(bundle: Bundle, ca_files: Sequence[Path], warn: TextIO) -> TrustStore:
    """The auditor's roots from `ca_files`, or (with a warning) the bundle's own; then the bundle's gateway
    certificates, each accepted only if one of those roots issued it."""
    if ca_files:
        roots = [c for p in ca_files for c in x509.load_pem_x509_certificates(Path(p).read_bytes())]
    else:
        roots = bundle.roots
        names = "; ".join(r.subject.rfc4514_string() for r in roots) or "none"
        print(f"WARNING: trusting the root certificates inside the bundle ({names}); a bundle can vouch for "
              "itself this way, so pass --ca FILE to verify against roots you hold", file=warn)
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
            print(f"warning: a gateway certificate of the bundle is not accepted: {e}", file=warn)
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


def prove(bundle: Bundle, trust: TrustStore, envelope: bytes, out: TextIO) -> bool:
    """Print the chain of evidence that `envelope` (exact bytes) is the message the bundle's records describe;
    True only if its hash is the one recorded at the origin and at the destination and the bundle verifies."""
    sha = hashlib.sha256(envelope).hexdigest()
    problems: list[str] = []
    try:
        doc = orjson.loads(envelope)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        print(f"envelope: {len(envelope)} bytes, sha256 {sha}: not an envelope (no message id)", file=out)
        print("NOT PROVED", file=out)
        return False
    mid, sender, recipient = doc["id"], doc.get("from"), doc.get("to")
    print(f"envelope: message {mid} ({doc.get('type')}) {sender} -> {recipient}, {len(envelope)} bytes, "
          f"sha256 {sha}", file=out)

    report = verify_bundle(bundle, trust)
    segments, _ = _segments(bundle)
    signed_by = _signatures(segments, trust)
    mine = [(seg.region, r) for seg in segments for r in seg.records if r.get("message_id") == mid]
    mine.sort(key=lambda x: (str(x[1].get("at")), x[0], _seq(x[1])))
    print("evidence:", file=out)
    for region, r in mine:
        same = r.get("envelope_sha256") == sha
        seq = _seq(r)
        cover = next(((s, who) for s, who in signed_by.get(region, []) if s >= seq), None)
        signed = f"checkpoint {cover[0]} signed by {cover[1]}" if cover else "no checkpoint that holds"
        mark = "matches" if same else "DIFFERS"
        print(f"  {r.get('at')}  {region}  {seq:>6}  {r.get('stage'):<16} envelope sha256 {mark:<8} {signed}",
              file=out)
        if r.get("stage") in MUST_MATCH and not same:
            problems.append(f"{region} record {seq} ({r.get('stage')}) names another envelope hash")
    origin = [r for region, r in mine if r.get("stage") in ORIGIN_STAGES and region == sender]
    destination = [(region, r) for region, r in mine if r.get("stage") in DESTINATION_STAGES]
    if not origin:
        problems.append(f"the bundle holds no accepted/published record of {mid} at its origin {sender}")
    if not any(r.get("stage") == "delivered" and region == recipient for region, r in destination):
        problems.append(f"the bundle holds no delivered record of {mid} at its destination {recipient}")
    if destination and not any(r.get("stage") == "received" and r.get("envelope_sha256") == sha
                               for _, r in destination):
        problems.append(f"no received record of {mid} names this envelope's hash")
    if report.ok:
        print(f"bundle: {report.records} records in {report.segments} segments verify "
              f"({', '.join(sorted(report.regions))})", file=out)
    else:
        problems.extend(f"bundle fault: {f}" for f in report.faults)
    for p in problems:
        print(f"  - {p}", file=out)
    if problems:
        print(f"NOT PROVED: the envelope is not shown to be the one that travelled as {mid}", file=out)
        return False
    print(f"PROVED: this envelope is exactly the one that travelled as {mid} from {sender} to {recipient}", file=out)
    return True


def _signatures(segments: Sequence[Segment], trust: TrustStore) -> dict[str, list[tuple[int, str]]]:
    """Per region, the checkpoints that hold (seq, who signed), in seq order."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for seg in segments:
        if not _holds(seg, trust):
            continue
        header = parse_detached(seg.checkpoint.jws).header
        out[seg.region].append((seg.checkpoint.seq, f"{seg.region} ({header.get('kid')})"))
    for items in out.values():
        items.sort()
    return out


# --- the command line -------------------------------------------------------------------------------------------


def _parse_trail(values: Sequence[tuple[bytes | None, bytes, int]]) -> list[Segment]:
    segments = []
    for _key, value, offset in values:
        try:
            segments.append(parse_segment(value, offset))
        except AuditFormatError as e:
            print(f"warning: offset {offset} of yrdx.audit is not a segment ({e}); not exported", file=sys.stderr)
    return segments


def cmd_export(args: argparse.Namespace) -> int:

    start, end = timestamp_or_none(args.start), timestamp_or_none(args.end)
    if (args.start and start is None) or (args.end and end is None):
        print("yrdx: --from and --to take RFC 3339 times with a zone, e.g. 2026-11-23T15:00:00Z", file=sys.stderr)
        return 2
    window = start is not None or end is not None
    if (args.message is not None) + (args.conversation is not None) + window != 1:
        print("yrdx: audit export takes one of --message ID, --conversation ID or --from T/--to T", file=sys.stderr)
        return 2
    trail = read_trail(args.config, args.timeout, "export")
    if trail is None:
        return 2
    trust, values = trail
    segments = _parse_trail(values)
    keys, messages = select_records(segments, message=args.message, conversation=args.conversation, start=start,
                                    end=end)
    if not keys:
        print("yrdx: no audit record matches the selection", file=sys.stderr)
        return 1
    selection = Selection(messages, args.conversation, args.start, args.end)
    doc = build_bundle(segments, trust, keys, selection)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        Path(args.out).write_bytes(data)
        regions = sorted({s["region"] for s in doc["segments"]})
        print(f"exported {len(keys)} selected records ({len(messages)} messages) with their chains from "
              f"{', '.join(regions)} to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(Path(args.bundle))
        trust = bundle_trust(bundle, [Path(p) for p in args.ca or ()], sys.stderr)
        envelope = Path(args.envelope).read_bytes()
    except (BundleError, OSError, ValueError) as e:
        print(f"yrdx: {e}", file=sys.stderr)
        return 2
    return 0 if prove(bundle, trust, envelope, sys.stdout) else 1


def add_bundle_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("export", help="write the records (and proofs) of a message, conversation or time window")
    e.add_argument("--config", required=True, help="a gateway config: Kafka settings and trust")
    pick = e.add_mutually_exclusive_group()
    pick.add_argument("--message", metavar="ID")
    pick.add_argument("--conversation", metavar="ID")
    e.add_argument("--from", dest="start", metavar="T", help="RFC 3339 start of a time window")
    e.add_argument("--to", dest="end", metavar="T", help="RFC 3339 end of a time window")
    e.add_argument("--out", metavar="FILE", help="the bundle file (default: standard output)")
    e.add_argument("--timeout", type=float, default=30.0, help="seconds to read yrdx.audit (default 30)")
    e.set_defaults(func=cmd_export)

    p = sub.add_parser("prove", help="show that an envelope a platform kept is exactly the one that travelled")
    p.add_argument("--bundle", required=True)
    p.add_argument("--envelope", required=True, help="the envelope file, exact bytes as received")
    p.add_argument("--ca", action="append", metavar="FILE", help="the auditor's own trust roots")
    p.set_defaults(func=cmd_prove)
