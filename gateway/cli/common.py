"""What the command groups share: loading a gateway config (and its trust) or saying on stderr why not."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.crypto.trust import TrustError, TrustStore


def error(message: str) -> None:
    """One line on stderr, `yrdx: ` first: how every command says why it cannot go on."""
    print(f"yrdx: {message}", file=sys.stderr)


def load_config_or_error(path: str) -> GatewayConfig | None:
    """The gateway config at `path`; None after `yrdx: bad config PATH: why` on stderr."""
    try:
        return load_config(Path(path))
    except ConfigError as e:
        error(f"bad config {path}: {e}")
        return None


def load_trust_or_error(path: str) -> tuple[GatewayConfig, TrustStore] | None:
    """A gateway config and the trust an auditor checks checkpoints against: its roots (trust.ca) and gateway
    certificates (trust.certificates); None after `yrdx: PATH: why` on stderr (the auditors' commands have always
    said it so, without "bad config", as the reason may be in a certificate file). For `yrdx audit ...`."""
    try:
        cfg = load_config(Path(path))
        return cfg, TrustStore.from_files(list(cfg.trust_ca), list(cfg.trust_certificates))
    except (ConfigError, TrustError, ValueError, OSError) as e:
        error(f"{path}: {e}")
        return None
