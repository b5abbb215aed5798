"""The `yrdx` parser: every command group registers its sub-commands; installed packages may add commands."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

from gateway.cli import audit, certs, console, dlq, init, kafka, send, serve, token, trust

# Packages add commands through this entry point group: `name = "module:register"`, register(subparsers) adding
# the command `name` (the adapters package contributes `yrdx demo` so, pyproject.toml).
COMMANDS_GROUP = "yrdx.commands"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yrdx", description="Yangtze River Delta data-exchange gateway")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (certs, init, token, kafka, audit, dlq, trust, serve, send, console):
        group.register(sub)
    for command in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        command.load()(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
