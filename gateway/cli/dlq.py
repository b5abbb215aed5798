"""`yrdx dlq list|replay`: what a region dead-lettered, and putting it back once the cause is fixed."""

from __future__ import annotations

import argparse
import asyncio

from gateway.cli.common import error, load_config_or_error
from gateway.config import GatewayConfig
from gateway.relay.replay import DeadLetter, read_dead_letters, replay, select


def _load(args: argparse.Namespace) -> tuple[GatewayConfig, list[DeadLetter]] | None:
    """The config and its region's dead letters that --reason and --id select; None after saying why."""
    cfg = load_config_or_error(args.config)
    if cfg is None:
        return None
    try:
        letters = asyncio.run(read_dead_letters(cfg.kafka, cfg.region, args.timeout))
    except Exception as e:  # timeouts and aiokafka's connection errors alike
        error(f"cannot read {cfg.topics.dlq(cfg.region)}: {e or 'timed out'}")
        return None
    return cfg, select(letters, args.reason, args.id or ())


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
        error("dlq replay needs --id ID (repeatable), --reason CODE or --all")
        return 2
    loaded = _load(args)
    if loaded is None:
        return 2
    cfg, letters = loaded
    if not letters:
        error("no dead letter matches")
        return 1
    asyncio.run(replay(cfg.kafka, cfg.region, letters))
    print(f"replayed {len(letters)} dead letter(s) into {cfg.topics.inbox(cfg.region)}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
