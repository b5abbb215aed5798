"""The public surface of the `gateway` package: exactly these names, each defined inside the package."""

from __future__ import annotations

import types

import gateway

EXPECTED = {
    "EGRESS_CODES", "HTTP_STATUS", "REGIONS", "ConfigError", "Envelope", "EnvelopeError", "Gateway", "GatewayConfig",
    "Problem", "Rejection", "SchemaRegistry", "Signer", "StartupError", "TokenMinter", "Topics", "TrustError",
    "TrustStore", "Verifier", "__version__", "build_envelope", "headers", "load_config", "parse_detached",
    "parse_envelope", "serve", "verify_detached",
}


def test_the_public_names_are_pinned() -> None:
    assert set(gateway.__all__) == EXPECTED
    assert len(gateway.__all__) == len(EXPECTED)  # no name listed twice


def test_every_listed_name_loads() -> None:
    assert set(gateway._MEMBERS) | {"__version__"} == set(gateway.__all__)


def test_every_public_member_is_defined_in_the_package() -> None:
    for name in gateway.__all__:
        member = getattr(gateway, name)
        if isinstance(member, types.ModuleType):
            assert member.__name__.startswith("gateway."), name
        elif callable(member):
            assert member.__module__.startswith("gateway."), name
