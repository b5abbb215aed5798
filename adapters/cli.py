"""`yrdx demo`: the command the adapters contribute to the yrdx CLI (entry point group `yrdx.commands`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.certs import SIGNING_ALGS
from gateway.cli.init import namespace_arg


def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.demo import run_demo  # the demo's clients and gateways load only when it runs

    return int(run_demo(Path(args.dir) if args.dir else None, keep=args.keep, alg=args.alg, namespace=args.namespace))


def register_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="local Kafka, four gateways, simulated platforms and stories")
    demo.add_argument("--dir", help="work folder (default: a temporary one)")
    demo.add_argument("--keep", action="store_true",
                      help="leave Kafka, the gateways and the console running until Ctrl-C (and keep the work folder)")
    demo.add_argument("--alg", choices=SIGNING_ALGS, default="ES256",
                      help="the exchange's signing suite (SM2SM3: the national suite)")
    demo.add_argument("--namespace", default="", metavar="NS", type=namespace_arg,
                      help="kafka.namespace of the demo's exchange (to share a cluster with another exchange)")
    demo.set_defaults(func=cmd_demo)
