"""`yrdx token`: print a fresh JWT of a platform or an auditor; and the caller's credentials, for `yrdx send`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.common import error, load_config_or_error
from gateway.config import GatewayConfig

if TYPE_CHECKING:
    from gateway.http.auth import TokenMinter


def caller(args: argparse.Namespace, platforms_only: bool) -> tuple[GatewayConfig, Path, bool] | None:
    """The config, the caller's (--as) private key and whether it is a platform (else an auditor); None after
    saying why. The dev PKI keeps `name.key` beside the configured `name.pub.pem`."""
    cfg = load_config_or_error(args.config)
    if cfg is None:
        return None
    platform = cfg.platform(args.as_)
    auditor = None if platforms_only else next((a for a in cfg.auditors if a.id == args.as_), None)
    public_key = platform.public_key if platform else auditor.public_key if auditor else None
    if public_key is None:
        role = "a platform" if platforms_only else "a platform or an auditor"
        error(f"{args.as_!r} is not {role} of {cfg.region}")
        return None
    key = Path(args.key) if args.key else public_key.with_name(public_key.name.removesuffix(".pub.pem") + ".key")
    return cfg, key, platform is not None


def minter(args: argparse.Namespace, cfg: GatewayConfig, key: Path, scope: str | None = None) -> TokenMinter | None:
    """The caller's token minter; None after saying why when its private key cannot be loaded."""
    from gateway.http.auth import TokenMinter

    try:
        return TokenMinter(args.as_, key, cfg.region, scope=scope)
    except OSError as e:
        error(f"cannot read the private key of {args.as_!r} ({key}): {e.strerror}")
    except ValueError as e:
        error(f"{key} is not a usable private key: {e}")
    return None


def cmd_token(args: argparse.Namespace) -> int:
    from gateway.http.auth import AUDIT_SCOPE

    found = caller(args, platforms_only=False)
    if found is None:
        return 2
    cfg, key, is_platform = found
    token_minter = minter(args, cfg, key, scope=None if is_platform else AUDIT_SCOPE)
    if token_minter is None:
        return 2
    print(token_minter.mint(args.lifetime))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tok = subparsers.add_parser("token", help="print a fresh platform (or auditor) JWT for curl")
    tok.add_argument("--config", required=True)
    tok.add_argument("--as", dest="as_", required=True, help="platform or auditor id")
    tok.add_argument("--key", help="private key (default: beside the configured public key)")
    tok.add_argument("--lifetime", type=int, default=300)
    tok.set_defaults(func=cmd_token)
