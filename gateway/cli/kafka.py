"""`yrdx kafka start|stop|status|acls`: run a local single-node Apache Kafka for development
(gateway.dev.local_kafka), locked down with `--secure`; print the exchange's ACLs (gateway.kafka.acls)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gateway.cli.init import namespace_arg
from gateway.dev.exchange import broker_security
from gateway.dev.kafka_security import BrokerSecurity
from gateway.dev.local_kafka import DEFAULT_VERSION, KafkaError, LocalKafka, env_bootstrap_servers, external_status
from gateway.kafka.acls import acls_commands, acls_json, acls_markdown, exchange_acls, region_acls
from gateway.wire.regions import REGIONS

EXIT_NOT_RUNNING = 3


def _broker(args: argparse.Namespace, security: BrokerSecurity | None = None) -> LocalKafka:
    """The broker of ``--dir``, on ``--port``/``--controller-port`` or the ports that dir last ran on."""
    return LocalKafka.of_dir(Path(args.dir) if args.dir else None, args.port, args.controller_port, args.version,
                             security)


def _security(args: argparse.Namespace) -> BrokerSecurity | None:
    """--secure [--exchange DIR]: the users and ACLs of the exchange in DIR (none: the admin alone)."""
    if not args.secure:
        return None
    if not args.exchange:
        return BrokerSecurity()
    try:
        return broker_security(Path(args.exchange))
    except (OSError, ValueError) as e:
        raise KafkaError(f"--exchange {args.exchange}: no exchange made by `yrdx init --secure` ({e})") from None


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_start(args: argparse.Namespace) -> int:
    external = env_bootstrap_servers()
    if external:
        _err(f"KAFKA_BOOTSTRAP_SERVERS is set: external cluster configured ({external}); not starting one")
        print(external)
        return 0
    if args.exchange and not args.secure:
        _err("--exchange goes with --secure (the exchange's SCRAM users and ACLs)")
        return 2
    try:
        broker = _broker(args, _security(args))
    except KafkaError as exc:
        _err(str(exc))
        return 1
    if broker.is_running() and broker.security is None:
        _err(f"Kafka is already running (pid {broker.pid()}, data {broker.data_dir})")
        print(broker.bootstrap_servers)
        return 0
    try:
        if not broker.jars_ready():
            _err(f"fetching Apache Kafka {broker.version} jars with Maven (first run only)...")
            broker.ensure_jars()
            _err(f"fetched into {broker.libs_dir} in {broker.last_download_seconds or 0.0:.1f} s")
        started = time.monotonic()
        broker.start(timeout=args.timeout)
    except KafkaError as exc:
        _err(str(exc))
        return 1
    _err(
        f"Kafka {broker.version} started in {time.monotonic() - started:.1f} s (pid {broker.pid()}, "
        f"data {broker.data_dir}, log {broker.log_file})"
    )
    if broker.secure:
        applied = len(broker.security.acls) if broker.security else 0
        _err(f"SASL_SSL SCRAM-SHA-512: CA {broker.tls.ca_cert}, admin password in {broker.tls.admin_password_file}, "
             f"{applied} ACLs applied")
    print(broker.bootstrap_servers)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    external = env_bootstrap_servers()
    if external:
        _err(f"KAFKA_BOOTSTRAP_SERVERS is set: external cluster configured ({external}); nothing to stop")
        return 0
    broker = _broker(args)
    pid = broker.pid()
    if pid is None:
        broker.stop()  # clears a stale pid file
        _err(f"Kafka is not running (data {broker.data_dir})")
        return 0
    broker.stop(timeout=args.timeout)
    _err(f"Kafka stopped (was pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    external = env_bootstrap_servers()
    status = (external_status(external, timeout=min(float(args.timeout), 10.0)) if external
              else {**_broker(args).status(), "external": False})
    print(json.dumps(status, indent=2))
    return 0 if status["running"] else EXIT_NOT_RUNNING


def cmd_acls(args: argparse.Namespace) -> int:
    create = not args.no_create
    if args.format == "markdown":
        sys.stdout.write(acls_markdown(args.namespace, create=create))
        return 0
    bindings = (region_acls(args.region, args.namespace, create=create) if args.region
                else exchange_acls(args.namespace, create=create))
    sys.stdout.write(acls_json(bindings) if args.format == "json" else acls_commands(bindings))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kafka start|stop|status``; each parser sets ``func=callable(args) -> int``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        default=None,
        help="broker data dir (default: $YRDX_HOME/broker, YRDX_HOME defaulting to ~/.cache/yrdx)",
    )
    common.add_argument("--port", type=int, default=None,
                        help="PLAINTEXT listener port on 127.0.0.1 (default: the one --dir last ran on, else 9092)")
    common.add_argument("--controller-port", type=int, default=None,
                        help="KRaft controller port (default: the one --dir last ran on, else 9093)")
    common.add_argument("--version", default=DEFAULT_VERSION, help=f"Kafka version ({DEFAULT_VERSION})")

    kafka = subparsers.add_parser(
        "kafka",
        help="run a local single-node Apache Kafka (KRaft) for development",
        description="A local single-node Apache Kafka (KRaft) on 127.0.0.1, built from Maven Central jars. "
        "If KAFKA_BOOTSTRAP_SERVERS is set, that external cluster is used and nothing is started or stopped.",
    )
    sub = kafka.add_subparsers(dest="kafka_command", metavar="{start,stop,status,acls}", required=True)
    start = sub.add_parser("start", parents=[common], help="start the broker (no-op if running)")
    start.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness (90)")
    start.add_argument("--secure", action="store_true",
                       help="locked down: SASL_SSL (SCRAM-SHA-512) with a development CA in --dir, "
                            "StandardAuthorizer, deny by default; use a fresh --dir")
    start.add_argument("--exchange", metavar="DIR", default=None,
                       help="with --secure: serve the exchange `yrdx init --secure --dir DIR` wrote (its SCRAM users "
                            "and ACLs; the broker's CA is copied to DIR/kafka/ca.crt)")
    start.set_defaults(func=cmd_start)
    stop = sub.add_parser("stop", parents=[common], help="stop the broker (SIGTERM, then SIGKILL)")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (30)")
    stop.set_defaults(func=cmd_stop)
    status = sub.add_parser("status", parents=[common], help="print JSON status; exit 0 if running, 3 if not")
    status.add_argument("--timeout", type=float, default=5.0, help="external cluster probe timeout (5)")
    status.set_defaults(func=cmd_status)
    acls = sub.add_parser("acls", help="print the ACLs of an exchange (generated from its names)")
    acls.add_argument("--namespace", default="", metavar="NS", type=namespace_arg, help="kafka.namespace")
    acls.add_argument("--region", choices=REGIONS, default=None,
                      help="only this region's grants (text and json; default: every region's)")
    acls.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                      help="kafka-acls.sh commands, JSON bindings, or the chart README's table")
    acls.add_argument("--no-create", action="store_true",
                      help="no CREATE grants: the operators create the topics before the gateways start")
    acls.set_defaults(func=cmd_acls)
