"""Reading the PEM files of keys and certificates: signing keys, encryption keys and certificates of every suite.

What a gateway loads at start-up (its identity, its peers' encryption keys, its trust) is read here; the
development PKI that writes such files is gateway.dev.pki, which the runtime never imports.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from gateway.crypto.keys import EncryptionPrivateKey, EncryptionPublicKey, PrivateKey, PublicKey
from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey, load_sm2_private_key, load_sm2_public_key

__all__ = [
    "load_certificate",
    "load_encryption_key",
    "load_encryption_pub",
    "load_private_key",
    "load_signing_public_key",
    "parse_encryption_pub",
]

# cryptography reads every key type here but SM2, whose curve it does not know (UnsupportedAlgorithm): those
# are read with gateway.crypto.sm2. Loaders raise TypeError for a key of an unexpected type.


def _load_private(path: Path) -> object:
    data = Path(path).read_bytes()
    try:
        return serialization.load_pem_private_key(data, password=None)
    except UnsupportedAlgorithm:
        try:
            return load_sm2_private_key(data)
        except ValueError:
            raise TypeError(f"{path}: unsupported private key type") from None


def _load_public(path: Path) -> object:
    return _public_from_pem(Path(path).read_bytes(), str(path))


def _public_from_pem(data: bytes, name: str) -> object:
    try:
        return serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm:
        try:
            return load_sm2_public_key(data)
        except ValueError:
            raise TypeError(f"{name}: unsupported public key type") from None


def load_encryption_key(path: Path) -> EncryptionPrivateKey:
    """The gateway's encryption key: an X25519 or SM2 PEM private key (TypeError for any other type)."""
    key = _load_private(path)
    if not isinstance(key, x25519.X25519PrivateKey | Sm2PrivateKey):
        raise TypeError(f"{path}: expected an X25519 or SM2 private key")
    return key


def parse_encryption_pub(pem: bytes, name: str = "key") -> EncryptionPublicKey:
    """An X25519 or SM2 public key from PEM bytes (a trust statement carries one); ValueError if it is not
    one, TypeError for a key of another type."""
    key = _public_from_pem(pem, name)
    if not isinstance(key, x25519.X25519PublicKey | Sm2PublicKey):
        raise TypeError(f"{name}: expected an X25519 or SM2 public key")
    return key


def load_encryption_pub(path: Path) -> EncryptionPublicKey:
    """A peer gateway's encryption key: an X25519 or SM2 PEM public key (TypeError for any other type)."""
    return parse_encryption_pub(Path(path).read_bytes(), str(path))


def load_private_key(path: Path) -> PrivateKey:
    """An unencrypted PEM private key (EC, Ed25519 or SM2); TypeError for any other key type."""
    key = _load_private(path)
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | Sm2PrivateKey):
        return key
    raise TypeError(f"{path}: unsupported private key type {type(key).__name__}")


def load_signing_public_key(path: Path) -> PublicKey:
    """The public half of a signing key: a PEM SubjectPublicKeyInfo key (EC, Ed25519 or SM2); TypeError for any
    other key type. (A platform's or auditor's P-256 JWT key is read by gateway.http.auth.)"""
    key = _load_public(path)
    if isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | Sm2PublicKey):
        return key
    raise TypeError(f"{path}: unsupported public key type {type(key).__name__}")


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file."""
    certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    return certs[0]
