"""`yrdx trust revoke`: revoke a gateway certificate on every gateway, signed by the root CA's key."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.common import error, load_config_or_error
from gateway.relay.revocations import ca_signer, publish_revocation, revocation


def cmd_revoke(args: argparse.Namespace) -> int:
    cfg = load_config_or_error(args.config)
    if cfg is None:
        return 2
    ca_cert = Path(args.ca_cert) if args.ca_cert else cfg.trust_ca[0]
    try:
        ca = ca_signer(ca_cert, Path(args.ca_key) if args.ca_key else None)
    except (OSError, ValueError) as e:
        error(f"cannot load the CA key and certificate: {e}")
        return 2
    asyncio.run(publish_revocation(cfg.kafka, revocation(ca, args.thumbprint, args.reason, cfg.topics.trust)))
    print(f"revoked {args.thumbprint} on {cfg.topics.trust}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trust = subparsers.add_parser("trust", help="distribute trust updates (revocations) to every gateway")
    sub = trust.add_subparsers(dest="trust_command", required=True)
    revoke = sub.add_parser("revoke", help="revoke a gateway certificate everywhere, signed by the root CA key")
    revoke.add_argument("--config", required=True, help="a gateway config (Kafka settings, trust roots)")
    revoke.add_argument("--thumbprint", required=True, help="x5t#S256 of the certificate to revoke")
    revoke.add_argument("--reason", default="unspecified")
    revoke.add_argument("--ca-key", help="the root CA private key (default: beside trust.ca[0] in the dev PKI)")
    revoke.add_argument("--ca-cert", help="the root CA certificate (default: trust.ca[0])")
    revoke.set_defaults(func=cmd_revoke)
