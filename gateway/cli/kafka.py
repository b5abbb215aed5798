"""`yrdx kafka start|stop|status`: run a local single-node Apache Kafka for development (gateway.dev.local_kafka)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gateway.dev.local_kafka import DEFAULT_VERSION, KafkaError, LocalKafka, env_bootstrap_servers, external_status

EXIT_NOT_RUNNING = 3


def _broker(args: argparse.Namespace) -> LocalKafka:
    """The broker of ``--dir``, on ``--port``/``--controller-port`` or the ports that dir last ran on."""
    return LocalKafka.of_dir(Path(args.dir) if args.dir else None, args.port, args.controller_port, args.version)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_start(args: argparse.Namespace) -> int:
    external = env_bootstrap_servers()
    if external:
        _err(f"KAFKA_BOOTSTRAP_SERVERS is set: external cluster configured ({external}); not starting one")
        print(external)
        return 0
    broker = _broker(args)
    if broker.is_running():
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
    sub = kafka.add_subparsers(dest="kafka_command", metavar="{start,stop,status}", required=True)
    start = sub.add_parser("start", parents=[common], help="start the broker (no-op if running)")
    start.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness (90)")
    start.set_defaults(func=cmd_start)
    stop = sub.add_parser("stop", parents=[common], help="stop the broker (SIGTERM, then SIGKILL)")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (30)")
    stop.set_defaults(func=cmd_stop)
    status = sub.add_parser("status", parents=[common], help="print JSON status; exit 0 if running, 3 if not")
    status.add_argument("--timeout", type=float, default=5.0, help="external cluster probe timeout (5)")
    status.set_defaults(func=cmd_status)
