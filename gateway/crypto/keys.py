"""Key types and certificate helpers shared by the signer, the trust store and the development PKI.

Two signing suites are supported: ES256 (ECDSA P-256 with SHA-256) and EdDSA (Ed25519).
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.regions import REGION_URI_PREFIX

Alg: TypeAlias = Literal["ES256", "EdDSA"]
ALGORITHMS: Final[frozenset[str]] = frozenset({"ES256", "EdDSA"})

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

GATEWAY_URI_PREFIX: Final = "urn:yrdx:gateway:"


def alg_of_private_key(key: object) -> Alg:
    """The JWS `alg` a private key signs with; ValueError for a key of any other type or curve."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"unsupported EC curve {key.curve.name}: ES256 needs P-256")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(
        f"unsupported signing key type {type(key).__name__}: use P-256 (ES256) or Ed25519 (EdDSA)"
    )


def alg_of_public_key(key: object) -> Alg | None:
    """The JWS `alg` a public key verifies, or None if it is of no supported type."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ES256" if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    return None


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported alg {alg!r}: use 'ES256' or 'EdDSA'")


def public_key_of(cert: x509.Certificate) -> PublicKey:
    """The certificate's public key, if it is of a supported type (TypeError otherwise)."""
    key = cert.public_key()
    if alg_of_public_key(key) is None:
        raise TypeError(f"unsupported certificate key type {type(key).__name__}")
    assert isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey))
    return key


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return a.public_bytes(enc, fmt) == b.public_bytes(enc, fmt)


def sha256_fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 over the DER encoding of the certificate (the digest behind x5t#S256)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(uri) for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]


def certificate_regions(cert: x509.Certificate) -> list[str]:
    """The region codes named by the certificate's `urn:yrdx:region:<R>` SAN URIs (unchecked, in order)."""
    n = len(REGION_URI_PREFIX)
    return [uri[n:] for uri in san_uris(cert) if uri.startswith(REGION_URI_PREFIX)]
