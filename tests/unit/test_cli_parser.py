"""The `yrdx` parser: the command groups of gateway/cli/ in their order, `yrdx demo` contributed by the adapters
through the `yrdx.commands` entry point group, and a parser that loads neither the demo nor the runtime."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from gateway.cli.main import COMMANDS_GROUP, build_parser

COMMANDS = ["certs", "init", "token", "kafka", "audit", "dlq", "trust", "serve", "send", "console", "demo"]


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_every_command_group_in_its_order() -> None:
    assert subcommands(build_parser()) == COMMANDS


def test_the_demo_is_an_entry_point_of_the_adapters() -> None:
    (demo,) = entry_points(group=COMMANDS_GROUP)  # re-run `pip install -e .` (make install) if this finds none
    assert (demo.name, demo.value) == ("demo", "adapters.cli:register_demo")
    args = build_parser().parse_args(["demo", "--alg", "SM2SM3", "--namespace", "demo-x", "--keep"])
    assert (args.alg, args.namespace, args.keep, args.dir) == ("SM2SM3", "demo-x", True, None)
    assert args.func.__module__ == "adapters.cli"


def test_demo_help_is_argparse_s(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", "--help"])
    assert exit_.value.code == 0
    assert "kafka.namespace of the demo's exchange" in capsys.readouterr().out


def test_building_the_parser_loads_neither_the_demo_nor_the_runtime() -> None:
    probe = ("import sys; from gateway.cli.main import build_parser; build_parser(); "
             "print(sorted(m for m in ('adapters.demo', 'adapters.simulated', 'gateway.runtime', 'gateway.http.api', "
             "'aiohttp.web') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]"
