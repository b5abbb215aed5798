"""`yrdx certs init|rotate`: write a development PKI (root CA, gateway certificates, platform and auditor keys),
and a region's next keys for a rotation."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.common import error
from gateway.crypto.keys import ALGORITHMS
from gateway.dev.pki import PkiLayout, init_pki, rotate_gateway_keys

SIGNING_ALGS = sorted(ALGORITHMS)
ALG_HELP = "the gateways' signing suite; SM2SM3 is the national suite (SM2 CA, SM2 keys)"


def cmd_certs_init(args: argparse.Namespace) -> int:
    try:
        layout = init_pki(Path(args.dir), alg=args.alg, force=args.force)
    except FileExistsError as e:
        error(str(e))
        return 1
    print(f"development PKI written to {layout.dir} (private keys are mode 0600; never commit them)")
    return 0


def cmd_certs_rotate(args: argparse.Namespace) -> int:
    try:
        keys = rotate_gateway_keys(PkiLayout(Path(args.dir)), args.region.upper(), args.tag)
    except (FileExistsError, OSError, ValueError, TypeError) as e:
        error(str(e))
        return 1
    print(f"certificate: {keys.certificate}\nprivate_key: {keys.private_key}\n"
          f"encryption_key: {keys.encryption_key}\nencryption_pub: {keys.encryption_pub}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = subparsers.add_parser("certs", help="development PKI").add_subparsers(dest="certs_command", required=True)
    ci = certs.add_parser("init", help="create a development root CA, gateway certificates and keys")
    ci.add_argument("--dir", required=True)
    ci.add_argument("--alg", choices=SIGNING_ALGS, default="ES256", help=ALG_HELP)
    ci.add_argument("--force", action="store_true", help="overwrite an existing PKI")
    ci.set_defaults(func=cmd_certs_init)
    cr = certs.add_parser("rotate", help="issue a region's next certificate and encryption key (development CA)")
    cr.add_argument("--dir", required=True, help="the development PKI (yrdx init: DIR/certs)")
    cr.add_argument("--region", required=True)
    cr.add_argument("--tag", required=True, help="names the new files: gateways/<r>.<tag>.crt, ...")
    cr.set_defaults(func=cmd_certs_rotate)
