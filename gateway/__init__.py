"""yrdx: the Yangtze River Delta data-exchange gateway. This module is the public surface, pinned by
tests/unit/test_exported_members.py; everything else is implementation and may move.

Members load on first use (PEP 562), so `import gateway.wire.headers` or `yrdx token` does not pull in the
runtime, aiohttp's server and the Kafka client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import ConfigError, GatewayConfig, load_config
    from gateway.crypto.jws import Signer, Verifier, parse_detached, verify_detached
    from gateway.crypto.trust import TrustError, TrustStore
    from gateway.http.auth import TokenMinter
    from gateway.runtime import Gateway, StartupError, serve
    from gateway.schemas.registry import SchemaRegistry
    from gateway.wire import headers
    from gateway.wire.envelope import Envelope, EnvelopeError
    from gateway.wire.envelope import build as build_envelope
    from gateway.wire.envelope import parse as parse_envelope
    from gateway.wire.problems import EGRESS_CODES, HTTP_STATUS, Problem, Rejection
    from gateway.wire.regions import REGIONS, Topics

__version__ = "0.1.0"

# public name -> (module, attribute in it; None for the module itself)
_MEMBERS: dict[str, tuple[str, str | None]] = {
    "ConfigError": ("gateway.config", "ConfigError"),
    "GatewayConfig": ("gateway.config", "GatewayConfig"),
    "load_config": ("gateway.config", "load_config"),
    "Signer": ("gateway.crypto.jws", "Signer"),
    "Verifier": ("gateway.crypto.jws", "Verifier"),
    "parse_detached": ("gateway.crypto.jws", "parse_detached"),
    "verify_detached": ("gateway.crypto.jws", "verify_detached"),
    "TrustError": ("gateway.crypto.trust", "TrustError"),
    "TrustStore": ("gateway.crypto.trust", "TrustStore"),
    "TokenMinter": ("gateway.http.auth", "TokenMinter"),
    "Gateway": ("gateway.runtime", "Gateway"),
    "StartupError": ("gateway.runtime", "StartupError"),
    "serve": ("gateway.runtime", "serve"),
    "SchemaRegistry": ("gateway.schemas.registry", "SchemaRegistry"),
    "headers": ("gateway.wire.headers", None),
    "Envelope": ("gateway.wire.envelope", "Envelope"),
    "EnvelopeError": ("gateway.wire.envelope", "EnvelopeError"),
    "build_envelope": ("gateway.wire.envelope", "build"),
    "parse_envelope": ("gateway.wire.envelope", "parse"),
    "EGRESS_CODES": ("gateway.wire.problems", "EGRESS_CODES"),
    "HTTP_STATUS": ("gateway.wire.problems", "HTTP_STATUS"),
    "Problem": ("gateway.wire.problems", "Problem"),
    "Rejection": ("gateway.wire.problems", "Rejection"),
    "REGIONS": ("gateway.wire.regions", "REGIONS"),
    "Topics": ("gateway.wire.regions", "Topics"),
}

__all__ = [
    "ConfigError",
    "EGRESS_CODES",
    "Envelope",
    "EnvelopeError",
    "Gateway",
    "GatewayConfig",
    "HTTP_STATUS",
    "Problem",
    "REGIONS",
    "Rejection",
    "SchemaRegistry",
    "Signer",
    "StartupError",
    "TokenMinter",
    "Topics",
    "TrustError",
    "TrustStore",
    "Verifier",
    "__version__",
    "build_envelope",
    "headers",
    "load_config",
    "parse_detached",
    "parse_envelope",
    "serve",
    "verify_detached",
]


def __getattr__(name: str) -> Any:
    if name not in _MEMBERS:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    module, attribute = _MEMBERS[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__() -> list[str]:
    return __all__
