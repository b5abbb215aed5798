"""The `yrdx` command line (DESIGN.md section 7)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.crypto.keys import ALGORITHMS
from gateway.wire.regions import check_namespace

if TYPE_CHECKING:
    from gateway.http.auth import TokenMinter

SIGNING_ALGS = sorted(ALGORITHMS)


def cmd_certs_init(args: argparse.Namespace) -> int:
    from gateway.dev.pki import init_pki

    try:
        layout = init_pki(Path(args.dir), alg=args.alg, force=args.force)
    except FileExistsError as e:
        print(f"yrdx: {e}", file=sys.stderr)
        return 1
    print(f"development PKI written to {layout.dir} (private keys are mode 0600; never commit them)")
    return 0


def _namespace(value: str) -> str:
    """argparse type of --namespace: a valid kafka.namespace (argparse answers a bad one with exit 2)."""
    try:
        return check_namespace(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.dev.exchange import init_exchange
    from gateway.wire.regions import REGIONS

    try:
        ex = init_exchange(
            Path(args.dir), base_port=args.base_port, bootstrap_servers=args.bootstrap_servers, force=args.force,
            namespace=args.namespace, alg=args.alg,
        )
    except FileExistsError as e:
        print(f"yrdx: {e}", file=sys.stderr)
        return 1
    for r in REGIONS:
        print(f"{r}: {ex.config_path(r)}")
    return 0


def _caller(args: argparse.Namespace, platforms_only: bool) -> tuple[GatewayConfig, Path, bool] | None:
    """The config, the caller's private key and whether it is a platform (else an auditor); None after saying
    why. The dev PKI keeps `name.key` beside the configured `name.pub.pem`."""
    cfg = _config(args.config)
    if cfg is None:
        return None
    platform = cfg.platform(args.as_)
    auditor = None if platforms_only else next((a for a in cfg.auditors if a.id == args.as_), None)
    public_key = platform.public_key if platform else auditor.public_key if auditor else None
    if public_key is None:
        role = "a platform" if platforms_only else "a platform or an auditor"
        print(f"yrdx: {args.as_!r} is not {role} of {cfg.region}", file=sys.stderr)
        return None
    key = Path(args.key) if args.key else public_key.with_name(public_key.name.removesuffix(".pub.pem") + ".key")
    return cfg, key, platform is not None


def _minter(args: argparse.Namespace, cfg: GatewayConfig, key: Path, scope: str | None = None) -> TokenMinter | None:
    """The caller's token minter; None after saying why when its private key cannot be loaded."""
    from gateway.http.auth import TokenMinter

    try:
        return TokenMinter(args.as_, key, cfg.region, scope=scope)
    except OSError as e:
        print(f"yrdx: cannot read the private key of {args.as_!r} ({key}): {e.strerror}", file=sys.stderr)
    except ValueError as e:
        print(f"yrdx: {key} is not a usable private key: {e}", file=sys.stderr)
    return None


def cmd_token(args: argparse.Namespace) -> int:
    from gateway.http.auth import AUDIT_SCOPE

    caller = _caller(args, platforms_only=False)
    if caller is None:
        return 2
    cfg, key, is_platform = caller
    minter = _minter(args, cfg, key, scope=None if is_platform else AUDIT_SCOPE)
    if minter is None:
        return 2
    print(minter.mint(args.lifetime))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.runtime import StartupError, serve

    cfg = _config(args.config)
    if cfg is None:
        return 2
    logs.setup(f"yrdx-gateway-{cfg.region.lower()}", args.log_level)
    try:
        asyncio.run(serve(cfg, Path(args.ready_file) if args.ready_file else None))
    except StartupError as e:
        print(f"yrdx: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    caller = _caller(args, platforms_only=True)
    if caller is None:
        return 2
    cfg, key, _ = caller
    try:
        payload = json.loads(Path(args.payload).read_text(encoding="utf-8"))
    except OSError as e:
        print(f"yrdx: cannot read the payload file {args.payload}: {e.strerror}", file=sys.stderr)
        return 2
    except ValueError as e:  # not UTF-8, or not JSON
        print(f"yrdx: the payload file {args.payload} is not JSON: {e}", file=sys.stderr)
        return 2
    minter = _minter(args, cfg, key)
    if minter is None:
        return 2
    body = {"type": args.type, "to": args.to, "payload": payload}
    if args.correlation_id:
        body["correlation_id"] = args.correlation_id
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host  # noqa: S104 (mapping a wildcard bind)
    url = f"http://{host}:{cfg.port}/v1/messages"
    req = urllib.request.Request(  # noqa: S310 (the URL is built from our own config)
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **minter.header()},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            print(json.loads(resp.read())["id"])
            return 0
    except urllib.error.HTTPError as e:
        print(e.read().decode(), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:  # refused, timed out: the gateway is not there
        print(f"yrdx: cannot reach the gateway at {url}: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.demo import run_demo

    return int(run_demo(Path(args.dir) if args.dir else None, keep=args.keep, alg=args.alg, namespace=args.namespace))


def _config(path: str) -> GatewayConfig | None:
    try:
        return load_config(Path(path))
    except ConfigError as e:
        print(f"yrdx: bad config {path}: {e}", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli.audit import add_cli as add_audit_cli
    from gateway.dev.local_kafka import add_cli as add_kafka_cli
    from gateway.relay.replay import add_cli as add_dlq_cli
    from gateway.relay.revocations import add_cli as add_trust_cli

    p = argparse.ArgumentParser(prog="yrdx", description="Yangtze River Delta data-exchange gateway")
    sub = p.add_subparsers(dest="command", required=True)

    certs = sub.add_parser("certs", help="development PKI").add_subparsers(dest="certs_command", required=True)
    ci = certs.add_parser("init", help="create a development root CA, gateway certificates and keys")
    ci.add_argument("--dir", required=True)
    ci.add_argument("--alg", choices=SIGNING_ALGS, default="ES256",
                    help="the gateways' signing suite; SM2SM3 is the national suite (SM2 CA, SM2 keys)")
    ci.add_argument("--force", action="store_true", help="overwrite an existing PKI")
    ci.set_defaults(func=cmd_certs_init)

    init = sub.add_parser("init", help="a complete local exchange: PKI + four gateway configs")
    init.add_argument("--dir", required=True)
    init.add_argument("--base-port", type=int, default=8401, help="SH gets this port, JS the next, ...")
    init.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    init.add_argument("--force", action="store_true")
    init.add_argument("--alg", choices=SIGNING_ALGS, default="ES256",
                      help="the gateways' signing suite; SM2SM3 is the national suite (SM2 CA, SM2 keys)")
    init.add_argument("--namespace", default="", metavar="NS", type=_namespace,
                      help="kafka.namespace of the four configs: NS. before every topic and consumer group name")
    init.set_defaults(func=cmd_init)

    tok = sub.add_parser("token", help="print a fresh platform (or auditor) JWT for curl")
    tok.add_argument("--config", required=True)
    tok.add_argument("--as", dest="as_", required=True, help="platform or auditor id")
    tok.add_argument("--key", help="private key (default: beside the configured public key)")
    tok.add_argument("--lifetime", type=int, default=300)
    tok.set_defaults(func=cmd_token)

    add_kafka_cli(sub)
    add_audit_cli(sub)
    add_dlq_cli(sub)
    add_trust_cli(sub)

    serve = sub.add_parser("serve", help="run one region's gateway")
    serve.add_argument("--config", required=True)
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--ready-file", help="write the bound port here once serving (used by tests)")
    serve.set_defaults(func=cmd_serve)

    send = sub.add_parser("send", help="send one message through a gateway; prints its id")
    send.add_argument("--config", required=True)
    send.add_argument("--as", dest="as_", required=True)
    send.add_argument("--to", required=True)
    send.add_argument("--type", required=True)
    send.add_argument("--payload", required=True, help="JSON file with the payload")
    send.add_argument("--correlation-id")
    send.add_argument("--key")
    send.set_defaults(func=cmd_send)

    demo = sub.add_parser("demo", help="local Kafka, four gateways, simulated platforms and stories")
    demo.add_argument("--dir", help="work folder (default: a temporary one)")
    demo.add_argument("--keep", action="store_true", help="keep the work folder")
    demo.add_argument("--alg", choices=SIGNING_ALGS, default="ES256",
                      help="the exchange's signing suite (SM2SM3: the national suite)")
    demo.add_argument("--namespace", default="", metavar="NS", type=_namespace,
                      help="kafka.namespace of the demo's exchange (to share a cluster with another exchange)")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
