"""`yrdx audit index|trace|verify|export|prove`: the auditors' commands over gateway.audit."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson

from gateway.audit.bundle import (
    BundleError,
    Selection,
    build_bundle,
    bundle_trust,
    format_proof,
    load_bundle,
    prove,
    select_records,
    verify_bundle,
)
from gateway.audit.index import (
    AuditIndex,
    IndexRun,
    IndexUnavailable,
    default_index_path,
    format_trace,
    open_index,
    trace_document,
    update_index,
)
from gateway.audit.journey import read_trail
from gateway.audit.model import parse_values
from gateway.audit.verify import Report, format_report, verify_values
from gateway.cli.common import error, load_trust_or_error
from gateway.config import GatewayConfig
from gateway.crypto.trust import TrustStore
from gateway.kafka.reader import KafkaError, TopicRecord
from gateway.relay.trust_updates import learn_certificates
from gateway.wire.envelope import timestamp_or_none

TrailValues = list[tuple[bytes | None, bytes, int]]  # (key, value, offset) of yrdx.audit, in topic order


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


# --- yrdx audit index | trace -------------------------------------------------------------------------------


def index_target(args: argparse.Namespace) -> str:
    """--dsn, else --db, else the default SQLite file next to --config."""
    if args.dsn:
        return str(args.dsn)
    return str(Path(args.db).resolve() if args.db else default_index_path(Path(args.config)))


async def _index(cfg: GatewayConfig, trust: TrustStore, index: AuditIndex, follow: bool) -> IndexRun:
    await learn_certificates(cfg.kafka, trust)
    if not follow:
        return await update_index(cfg.kafka, index, trust=trust)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await update_index(cfg.kafka, index, trust=trust, follow=stop)


def _open(args: argparse.Namespace) -> AuditIndex | None:
    try:
        return open_index(index_target(args))
    except IndexUnavailable as e:
        error(str(e))
        return None


def cmd_index(args: argparse.Namespace) -> int:
    loaded = load_trust_or_error(args.config)
    index = _open(args) if loaded is not None else None
    if loaded is None or index is None:
        return 2
    cfg, trust = loaded
    with index:
        audit_topic = cfg.topics.audit
        stored = index.positions(audit_topic)
        for p, offset in sorted(stored.items()):
            print(f"{audit_topic}[{p}]: resuming at offset {offset} ({index.where})", flush=True)
        if not stored:
            print(f"{audit_topic}: nothing indexed yet, reading from the beginning ({index.where})", flush=True)
        started = time.monotonic()
        try:
            run = asyncio.run(_index(cfg, trust, index, args.follow))
        except (TimeoutError, KafkaError, OSError) as e:
            error(f"cannot read {audit_topic} from {cfg.kafka.bootstrap_servers}: {e!r}")
            return 1
        counts = index.counts()
    print(f"{run.summary()} in {time.monotonic() - started:.1f} s", flush=True)
    print(f"index: {counts['records']} records, {counts['segments']} segments, {counts['conflicts']} conflicts",
          flush=True)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    loaded = load_trust_or_error(args.config)
    index = _open(args) if loaded is not None else None
    if loaded is None or index is None:
        return 2
    cfg, trust = loaded
    with index:
        if not args.no_update:
            try:
                asyncio.run(_index(cfg, trust, index, follow=False))
            except (TimeoutError, KafkaError, OSError) as e:
                error(f"index not updated ({e!r}); tracing what it holds")
        doc = trace_document(index, args.message_id)
    if doc is None:
        error(f"no audit record names {args.message_id}")
        return 3
    if doc["conflicts"]:
        error(f"{len(doc['conflicts'])} records on {cfg.topics.audit} that touch this trace are not their "
              "region's own (conflicts)")
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() if args.json else format_trace(doc))
    return 0


# --- yrdx audit verify | export | prove ---------------------------------------------------------------------


def _read_trail(config: str | None, timeout_s: float, command: str) -> tuple[TrustStore, TrailValues] | None:
    """The trust of a gateway config and every value of yrdx.audit in topic order; None (after saying why on
    stderr) when the config, its trust or the broker fails. Shared by `verify` and `export`."""
    if not config:
        error(f"audit {command} needs --config FILE (Kafka and trust)")
        return None
    loaded = load_trust_or_error(config)
    if loaded is None:
        return None
    cfg, trust = loaded
    try:
        records = asyncio.run(_trail(cfg, trust, timeout_s))
    except Exception as e:  # timeouts, OS errors and aiokafka's connection errors alike
        error(f"cannot read {cfg.topics.audit} from {cfg.kafka.bootstrap_servers}: {e or 'timed out'}")
        return None
    return trust, [(r.key, r.value, r.offset) for r in records]


async def _trail(cfg: GatewayConfig, trust: TrustStore, timeout_s: float) -> list[TopicRecord]:
    records = await read_trail(cfg.kafka, timeout_s)
    await learn_certificates(cfg.kafka, trust, timeout_s)  # after the trail: what it was signed with is announced
    return records


def _emit(report: Report, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def cmd_verify(args: argparse.Namespace) -> int:
    if args.bundle:
        try:
            bundle = load_bundle(Path(args.bundle))
            report = verify_bundle(bundle, bundle_trust(bundle, [Path(p) for p in args.ca or ()], _warn))
        except (BundleError, OSError, ValueError) as e:
            error(f"{args.bundle}: {e}")
            return 2
        return _emit(report, args.json)
    trail = _read_trail(args.config, args.timeout, "verify (or --bundle FILE)")
    if trail is None:
        return 2
    trust, values = trail
    return _emit(verify_values(values, trust), args.json)


def cmd_export(args: argparse.Namespace) -> int:
    start, end = timestamp_or_none(args.start), timestamp_or_none(args.end)
    if (args.start and start is None) or (args.end and end is None):
        error("--from and --to take RFC 3339 times with a zone, e.g. 2026-11-23T15:00:00Z")
        return 2
    window = start is not None or end is not None
    if (args.message is not None) + (args.conversation is not None) + window != 1:
        error("audit export takes one of --message ID, --conversation ID or --from T/--to T")
        return 2
    trail = _read_trail(args.config, args.timeout, "export")
    if trail is None:
        return 2
    trust, values = trail
    segments, bad = parse_values(values)
    for b in bad:
        _warn(f"warning: offset {b.offset} of yrdx.audit is not a segment ({b.error}); not exported")
    keys, messages = select_records(segments, message=args.message, conversation=args.conversation, start=start,
                                    end=end)
    if not keys:
        error("no audit record matches the selection")
        return 1
    selection = Selection(messages, args.conversation, args.start, args.end)
    doc = build_bundle(segments, trust, keys, selection)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        Path(args.out).write_bytes(data)
        regions = sorted({s["region"] for s in doc["segments"]})
        _warn(f"exported {len(keys)} selected records ({len(messages)} messages) with their chains from "
              f"{', '.join(regions)} to {args.out}")
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(Path(args.bundle))
        trust = bundle_trust(bundle, [Path(p) for p in args.ca or ()], _warn)
        envelope = Path(args.envelope).read_bytes()
    except (BundleError, OSError, ValueError) as e:
        error(str(e))
        return 2
    proof = prove(bundle, trust, envelope)
    print(format_proof(proof))
    return 0 if proof.proved else 1


# --- the parsers --------------------------------------------------------------------------------------------


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="a gateway config: its Kafka settings, and its trust (trust.ca, trust.certificates) to check "
                        "the checkpoints against")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--db", help="SQLite index file (default: var/audit-index.sqlite next to the config)")
    where.add_argument("--dsn", help="PostgreSQL instead of SQLite: postgresql://user@host:port/db")


def _add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """index, trace, verify, export and prove, as the sub-commands of `yrdx audit`."""
    index = sub.add_parser("index", help="index yrdx.audit into SQLite or PostgreSQL, from where it stopped")
    _where(index)
    index.add_argument("--follow", action="store_true", help="keep indexing until SIGTERM or SIGINT")
    index.set_defaults(func=cmd_index)

    tr = sub.add_parser("trace", help="one message's conversation across regions, receipts included")
    tr.add_argument("message_id")
    _where(tr)
    tr.add_argument("--json", action="store_true", help="the JSON document (as GET /v1/audit/messages/{id})")
    tr.add_argument("--no-update", action="store_true", help="trace the index as it is, without catching up")
    tr.set_defaults(func=cmd_trace)

    v = sub.add_parser("verify", help="check every chain, checkpoint and cross-region record (exit 0: all hold)")
    v.add_argument("--config", help="a gateway config: Kafka settings and trust (trust.ca, trust.certificates)")
    v.add_argument("--bundle", help="verify an exported bundle instead: no Kafka, no config needed")
    v.add_argument("--ca", action="append", metavar="FILE",
                   help="with --bundle: the auditor's own trust roots (default: the roots inside the bundle)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--timeout", type=float, default=30.0, help="seconds to read yrdx.audit (default 30)")
    v.set_defaults(func=cmd_verify)

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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="index, trace, verify and export the audit trail")
    _add_commands(audit.add_subparsers(dest="audit_command", required=True))
