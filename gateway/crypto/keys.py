"""Key types and certificate helpers shared by the signer, the trust store and the development PKI.

Three signing suites are supported, named by their JWS ``alg``:

- ES256: ECDSA P-256 with SHA-256 (RFC 7518);
- EdDSA: Ed25519 (RFC 8037);
- SM2SM3: the national suite, SM2 (GB/T 32918.2) with SM3 and the default signer ID ``"1234567812345678"``,
  the signature value DER ``SEQUENCE { r, s }`` (:func:`gateway.crypto.sm2.sm2_sign`). "SM2SM3" is a private-use
  ``alg`` name (RFC 7515 section 4.1.1): it is not registered in the IANA JOSE registry, so only yrdx gateways
  and verifiers that adopt the same definition understand it.

SM2 keys are :class:`~gateway.crypto.sm2.Sm2PrivateKey` / :class:`~gateway.crypto.sm2.Sm2PublicKey`; SM2
certificates parse with ``cryptography`` but their key does not load there, so take a certificate's key with
:func:`public_key_of`, never ``cert.public_key()``.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from gateway.crypto.sm2 import (
    Sm2PrivateKey,
    Sm2PublicKey,
    generate_sm2_key,
    is_sm2_certificate,
    sm2_public_key_of,
)
from gateway.wire.regions import REGION_URI_PREFIX

Alg: TypeAlias = Literal["ES256", "EdDSA", "SM2SM3"]
ALGORITHMS: Final[frozenset[str]] = frozenset({"ES256", "EdDSA", "SM2SM3"})

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | Sm2PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | Sm2PublicKey

# The keys sealed payloads are encrypted to: X25519 (JOSE suite, seal.py) or SM2 (national suite, seal_sm.py).
EncryptionPrivateKey: TypeAlias = x25519.X25519PrivateKey | Sm2PrivateKey
EncryptionPublicKey: TypeAlias = x25519.X25519PublicKey | Sm2PublicKey

GATEWAY_URI_PREFIX: Final = "urn:yrdx:gateway:"


def alg_of_private_key(key: object) -> Alg:
    """The JWS `alg` a private key signs with; ValueError for a key of any other type or curve."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"unsupported EC curve {key.curve.name}: ES256 needs P-256")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, Sm2PrivateKey):
        return "SM2SM3"
    raise ValueError(
        f"unsupported signing key type {type(key).__name__}: use P-256 (ES256), Ed25519 (EdDSA) or SM2 (SM2SM3)"
    )


def alg_of_public_key(key: object) -> Alg | None:
    """The JWS `alg` a public key verifies, or None if it is of no supported type."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ES256" if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, Sm2PublicKey):
        return "SM2SM3"
    return None


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "SM2SM3":
        return generate_sm2_key()
    raise ValueError(f"unsupported alg {alg!r}: use 'ES256', 'EdDSA' or 'SM2SM3'")


def public_key_of(cert: x509.Certificate) -> PublicKey:
    """The certificate's public key, if it is of a supported type (TypeError otherwise): P-256, Ed25519 or SM2
    (which ``cert.public_key()`` cannot load)."""
    try:
        key: object = cert.public_key()
    except UnsupportedAlgorithm:
        if not is_sm2_certificate(cert):
            raise TypeError("unsupported certificate key type") from None
        return sm2_public_key_of(cert)
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
