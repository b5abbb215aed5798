"""`yrdx dlq list|replay`: what a region dead-lettered, and putting it back once the cause is fixed.

A dead letter holds the original record bytes and signature header, so a replay is the same signed message
produced again to the region's own inbox, marked with `yrdx-replay-of: <dlq partition:offset>`. The gateway
checks it again from scratch (signature, schema, policy, expiry), records a `replayed` audit record, and delivers
it unless the same id was already delivered: replaying never delivers a message twice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.journey import TopicRecord, read_topic
from gateway.config import ConfigError, GatewayConfig, KafkaConfig, load_config
from gateway.kafka.port import OutRecord
from gateway.kafka.transport import KafkaPublisher
from gateway.wire import headers
from gateway.wire.envelope import EnvelopeError, parse
from gateway.wire.regions import DEFAULT_TOPICS, Topics


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: TopicRecord
    reason: str
    detail: str
    message_id: str

    @property
    def where(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"


def dead_letters(records: Sequence[TopicRecord]) -> list[DeadLetter]:
    out = []
    for r in records:
        try:
            msg_id = parse(r.value).id
        except EnvelopeError:
            msg_id = ""  # unparsable bytes (e.g. a tampered record) stay listed, without an id
        reason = r.headers.get(headers.DLQ_REASON) or b""
        detail = r.headers.get(headers.DLQ_DETAIL) or b""
        out.append(DeadLetter(r, reason.decode(errors="replace"), detail.decode(errors="replace"),
                              msg_id))
    return out


def replay_record(letter: DeadLetter, region: str, topics: Topics = DEFAULT_TOPICS) -> OutRecord:
    """The dead letter as it first arrived (bytes, key, signature), marked as a replay of its DLQ position."""
    kept = [(k, v) for k, v in letter.record.headers.items() if k == headers.SIGNATURE]
    kept.append((headers.REPLAY_OF, f"{topics.dlq(region)}:{letter.where}".encode()))
    return OutRecord(topics.inbox(region), letter.record.value, letter.record.key, kept)


async def _replay(kafka: KafkaConfig, records: list[OutRecord]) -> None:
    publisher = KafkaPublisher(kafka, 30.0)
    await publisher.start()
    try:
        await publisher.publish(records)
    finally:
        await publisher.stop()


def _load(args: argparse.Namespace) -> tuple[GatewayConfig, list[DeadLetter]] | None:
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as e:
        print(f"yrdx: bad config {args.config}: {e}", file=sys.stderr)
        return None
    try:
        records = asyncio.run(read_topic(cfg.kafka, cfg.topics.dlq(cfg.region), args.timeout))
    except Exception as e:  # timeouts and aiokafka's connection errors alike
        print(f"yrdx: cannot read {cfg.topics.dlq(cfg.region)}: {e or 'timed out'}", file=sys.stderr)
        return None
    letters = dead_letters(records)
    if args.reason:
        letters = [d for d in letters if d.reason == args.reason]
    if args.id:
        letters = [d for d in letters if d.message_id in set(args.id)]
    return cfg, letters


def cmd_list(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 2
    _, letters = loaded
    for d in letters:
        print(f"{d.where:>10}  {d.reason:<20}  {d.message_id or '-':<36}  {d.detail[:80]}")
    print(f"{len(letters)} dead letter(s)")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if not (args.id or args.reason or args.all):
        print("yrdx: dlq replay needs --id ID (repeatable), --reason CODE or --all", file=sys.stderr)
        return 2
    loaded = _load(args)
    if loaded is None:
        return 2
    cfg, letters = loaded
    if not letters:
        print("yrdx: no dead letter matches", file=sys.stderr)
        return 1
    asyncio.run(_replay(cfg.kafka, [replay_record(d, cfg.region, cfg.topics) for d in letters]))
    print(f"replayed {len(letters)} dead letter(s) into {cfg.topics.inbox(cfg.region)}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = subparsers.add_parser("dlq", help="list or replay this region's dead letters")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, func, text in (("list", cmd_list, "list dead letters with their reasons"),
                             ("replay", cmd_replay, "produce dead letters again to the region's inbox")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="the region's gateway config")
        p.add_argument("--reason", help="only dead letters with this reason code")
        p.add_argument("--id", action="append", help="only this message id (repeatable)")
        p.add_argument("--timeout", type=float, default=30.0)
        if name == "replay":
            p.add_argument("--all", action="store_true", help="every dead letter (with --reason: all of that reason)")
        p.set_defaults(func=func)
