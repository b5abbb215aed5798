"""`yrdx trust revoke|publish`: trust updates on `yrdx.trust` that every gateway applies without a restart.

`revoke` is signed by the root CA's key; `publish` announces a region's new signing certificate (signed by that
certificate's own key) or its new encryption public key (signed by the region's certificate), the statements of
gateway.relay.trust_updates.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.common import error, load_config_or_error
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_encryption_pub, load_private_key
from gateway.crypto.keyring import encryption_kid
from gateway.crypto.trust import TrustError, TrustStore
from gateway.kafka.port import OutRecord
from gateway.relay.trust_updates import (
    ca_signer,
    certificate_statement,
    encryption_key_statement,
    publish_update,
    revocation,
)


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
    asyncio.run(publish_update(cfg.kafka, revocation(ca, args.thumbprint, args.reason, cfg.topics.trust)))
    print(f"revoked {args.thumbprint} on {cfg.topics.trust}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    cfg = load_config_or_error(args.config)
    if cfg is None:
        return 2
    try:
        cert = load_certificate(Path(args.certificate) if args.certificate else cfg.certificate)
        signer = Signer(load_private_key(Path(args.key) if args.key else cfg.private_key), cert)
        # Refused here rather than ignored by every gateway: the certificate must chain to this exchange's roots.
        own = TrustStore.from_files(list(cfg.trust_ca)).add_certificate(cert)
        if own.region != cfg.region:
            raise ValueError(f"the certificate is of {own.region}, the config of {cfg.region}")
        record: OutRecord
        if args.encryption_key:
            key = load_encryption_pub(Path(args.encryption_key))
            record, what = encryption_key_statement(signer, key, cfg.topics.trust), encryption_kid(cfg.region, key)
        else:
            record, what = certificate_statement(signer, cfg.topics.trust), f"certificate {signer.thumbprint}"
    except (OSError, ValueError, TypeError, TrustError) as e:
        error(f"cannot publish: {e}")
        return 2
    asyncio.run(publish_update(cfg.kafka, record))
    print(f"published {what} of {cfg.region} on {cfg.topics.trust}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trust = subparsers.add_parser("trust", help="distribute trust updates (revocations, new keys) to every gateway")
    sub = trust.add_subparsers(dest="trust_command", required=True)
    revoke = sub.add_parser("revoke", help="revoke a gateway certificate everywhere, signed by the root CA key")
    revoke.add_argument("--config", required=True, help="a gateway config (Kafka settings, trust roots)")
    revoke.add_argument("--thumbprint", required=True, help="x5t#S256 of the certificate to revoke")
    revoke.add_argument("--reason", default="unspecified")
    revoke.add_argument("--ca-key", help="the root CA private key (default: beside trust.ca[0] in the dev PKI)")
    revoke.add_argument("--ca-cert", help="the root CA certificate (default: trust.ca[0])")
    revoke.set_defaults(func=cmd_revoke)
    publish = sub.add_parser(
        "publish", help="announce this region's new signing certificate (or, with --encryption-key, its new "
                        "encryption key) to every gateway")
    publish.add_argument("--config", required=True, help="the region's gateway config (Kafka, region, trust roots)")
    publish.add_argument("--certificate", help="the certificate to announce, or that signs the encryption key "
                                               "(default: identity.certificate)")
    publish.add_argument("--key", help="its private key (default: identity.private_key)")
    publish.add_argument("--encryption-key", metavar="PUB",
                         help="a new encryption public key (PEM) to announce instead of the certificate")
    publish.set_defaults(func=cmd_publish)
