"""`yrdx init`: write a complete local exchange, the development PKI and the four regions' gateway configs."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.certs import ALG_HELP, SIGNING_ALGS
from gateway.cli.common import error
from gateway.dev.exchange import init_exchange
from gateway.wire.regions import REGIONS, check_namespace


def namespace_arg(value: str) -> str:
    """argparse type of --namespace: a valid kafka.namespace (argparse answers a bad one with exit 2)."""
    try:
        return check_namespace(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_init(args: argparse.Namespace) -> int:
    try:
        ex = init_exchange(
            Path(args.dir), base_port=args.base_port, bootstrap_servers=args.bootstrap_servers, force=args.force,
            namespace=args.namespace, alg=args.alg, secure=args.secure,
        )
    except FileExistsError as e:
        error(str(e))
        return 1
    for r in REGIONS:
        print(f"{r}: {ex.config_path(r)}")
    if args.secure:
        print(f"Kafka: SASL_SSL, one SCRAM user per region; start the broker with "
              f"`yrdx kafka start --secure --exchange {ex.dir}`")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = subparsers.add_parser("init", help="a complete local exchange: PKI + four gateway configs")
    init.add_argument("--dir", required=True)
    init.add_argument("--base-port", type=int, default=8401, help="SH gets this port, JS the next, ...")
    init.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    init.add_argument("--force", action="store_true")
    init.add_argument("--alg", choices=SIGNING_ALGS, default="ES256", help=ALG_HELP)
    init.add_argument("--namespace", default="", metavar="NS", type=namespace_arg,
                      help="kafka.namespace of the four configs: NS. before every topic and consumer group name")
    init.add_argument("--secure", action="store_true",
                      help="Kafka locked down: per-region SCRAM users (password files) and the ACL file for "
                           "`yrdx kafka start --secure --exchange DIR`; configs use SASL_SSL")
    init.set_defaults(func=cmd_init)
