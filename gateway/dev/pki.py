"""Development PKI issuance: a root CA, gateway certificates, platform and auditor key pairs, as PEM files.

One gateway certificate per region, a platform key pair per region and an auditor key pair (init_pki); the
runtime reads such files through gateway.crypto.keyfiles, never through this module.

DEVELOPMENT ONLY: private keys are written unencrypted (PKCS8 PEM, mode 0600) and the CA key sits beside the
certificates. A production deployment brings its own CA, keeps keys in an HSM and issues short-lived
certificates; see certs/README.md.

Layout under ``dir``::

    ca.crt, ca.key                          root CA ("yrdx development root CA"; P-256, or SM2 for SM2SM3)
    gateways/<r>.crt, gateways/<r>.key      gateway certificate (SAN urn:yrdx:region:<R>) and signing key
    gateways/<r>.enc.key, .enc.pub.pem      X25519 (SM2 for SM2SM3) key pair: sealed payloads for <R> are
                                            encrypted to it
    platforms/<r>-platform.key, .pub.pem    platform key pair (P-256), signs the platform's JWTs
    auditor.key, auditor.pub.pem            auditor key pair (P-256)
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.keys import (
    GATEWAY_URI_PREFIX,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    PrivateKey,
    PublicKey,
    alg_of_private_key,
    generate_private_key,
)
from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey, generate_sm2_key, issue_sm2_certificate, key_identifier
from gateway.wire.regions import REGION_URI_PREFIX, REGIONS

__all__ = [
    "CA_NAME",
    "PkiLayout",
    "init_pki",
    "issue_gateway_cert",
    "make_ca",
    "rotate_gateway_keys",
    "write_certificate",
    "write_private_key",
    "write_public_key",
]

CA_NAME: Final = "yrdx development root CA"
ORGANIZATION: Final = "Yangtze River Delta data exchange (development)"
# Certificates start a little in the past so that a peer whose clock lags does not see them as not yet valid.
CLOCK_SKEW: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class PkiLayout:
    """The paths of a development PKI rooted at ``dir``; constructing it creates nothing."""

    dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def gateways_dir(self) -> Path:
        return self.dir / "gateways"

    @property
    def platforms_dir(self) -> Path:
        return self.dir / "platforms"

    def gateway_cert(self, region: str) -> Path:
        return self.gateways_dir / f"{region.lower()}.crt"

    def gateway_key(self, region: str) -> Path:
        return self.gateways_dir / f"{region.lower()}.key"

    def encryption_key(self, region: str) -> Path:
        """The gateway's X25519 (or SM2) key: sealed payloads addressed to its region are encrypted to it."""
        return self.gateways_dir / f"{region.lower()}.enc.key"

    def encryption_pub(self, region: str) -> Path:
        return self.gateways_dir / f"{region.lower()}.enc.pub.pem"

    def platform_key(self, region: str) -> Path:
        return self.platforms_dir / f"{region.lower()}-platform.key"

    def platform_pub(self, region: str) -> Path:
        return self.platforms_dir / f"{region.lower()}-platform.pub.pem"

    @property
    def auditor_key(self) -> Path:
        return self.dir / "auditor.key"

    @property
    def auditor_pub(self) -> Path:
        return self.dir / "auditor.pub.pem"

    def files(self) -> Iterator[Path]:
        """Every file init_pki writes."""
        yield self.ca_cert
        yield self.ca_key
        for region in REGIONS:
            yield self.gateway_cert(region)
            yield self.gateway_key(region)
            yield self.encryption_key(region)
            yield self.encryption_pub(region)
            yield self.platform_key(region)
            yield self.platform_pub(region)
        yield self.auditor_key
        yield self.auditor_pub

    def private_keys(self) -> Iterator[Path]:
        return (path for path in self.files() if path.suffix == ".key")

    def exists(self) -> bool:
        """True if any file of the layout exists."""
        return any(path.exists() for path in self.files())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    subject_key: PublicKey,
    issuer_key: PublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    ca: bool,
    region: str | None = None,
) -> x509.CertificateBuilder:
    """Every field and extension of a CA (``ca``) or gateway certificate (``region``) but the public key, the
    same for every key type: the signing step (:func:`_sign`) differs for SM2 only."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True) if ca else _key_usage(digital_signature=True),
            critical=True,
        )
    )
    if region is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(f"{REGION_URI_PREFIX}{region}"),
                    x509.UniformResourceIdentifier(f"{GATEWAY_URI_PREFIX}{region}"),
                ]
            ),
            critical=False,
        )
    return builder.add_extension(
        x509.SubjectKeyIdentifier(key_identifier(subject_key)), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier(
            key_identifier=key_identifier(issuer_key), authority_cert_issuer=None, authority_cert_serial_number=None
        ),
        critical=False,
    )


def _sign(builder: x509.CertificateBuilder, subject_key: PublicKey, issuer_key: PrivateKey) -> x509.Certificate:
    if isinstance(subject_key, Sm2PublicKey) or isinstance(issuer_key, Sm2PrivateKey):
        return issue_sm2_certificate(builder, subject_key, issuer_key)
    # Ed25519 signs without a separate hash; ECDSA certificates use SHA-256.
    hash_alg = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.public_key(subject_key).sign(issuer_key, hash_alg)


def make_ca(name: str, days: int = 365, *, alg: str = "ES256") -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA: basicConstraints CA (path length 0), keyCertSign and cRLSign. Its key is P-256
    for ``alg`` ES256 (signature ecdsa-with-SHA256) and SM2 for SM2SM3 (SM2-with-SM3); EdDSA gives Ed25519."""
    key = generate_private_key(alg)
    subject = _name(name)
    not_before = _now() - CLOCK_SKEW
    not_after = not_before + CLOCK_SKEW + dt.timedelta(days=days)
    public = key.public_key()
    builder = _builder(subject, subject, public, public, not_before, not_after, ca=True)
    return _sign(builder, public, key), key


def issue_gateway_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    region: str,
    *,
    alg: str = "ES256",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = 365,
) -> tuple[x509.Certificate, PrivateKey]:
    """A gateway certificate for ``region`` issued by the CA, with a fresh signing key (P-256 for ES256,
    Ed25519 for EdDSA, SM2 for SM2SM3): CN "yrdx gateway <R>", SAN URIs urn:yrdx:region:<R> and
    urn:yrdx:gateway:<R>, digitalSignature, not a CA. Validity defaults to [now - 5 min, not_before + days].
    The CA signs with its own suite (an SM2 CA with SM2-with-SM3), whatever the gateway's key.

    ``region`` is not checked against REGIONS, so tests can make certificates the trust store must refuse.
    """
    key = generate_private_key(alg)
    if not_before is None:
        not_before = _now() - CLOCK_SKEW
    if not_after is None:
        not_after = not_before + dt.timedelta(days=days)
    public = key.public_key()
    builder = _builder(
        _name(f"yrdx gateway {region}"), ca_cert.subject, public, ca_key.public_key(), not_before, not_after,
        ca=False, region=region,
    )
    return _sign(builder, public, ca_key), key


# --- files -------------------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is ignored for an existing file and masked by the umask
        os.write(fd, data)
    finally:
        os.close(fd)


def write_private_key(path: Path, key: PrivateKey | EncryptionPrivateKey) -> None:
    """PKCS8 PEM, unencrypted (development only), file mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_bytes(Path(path), pem, 0o600)


def write_public_key(path: Path, key: PublicKey | EncryptionPublicKey) -> None:
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_bytes(Path(path), pem, 0o644)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    _write_bytes(Path(path), cert.public_bytes(serialization.Encoding.PEM), 0o644)


# --- the whole PKI -----------------------------------------------------------------------------------------


def _encryption_key(alg: str) -> EncryptionPrivateKey:
    """The key sealed payloads for a gateway are encrypted to: SM2 in the national suite, X25519 otherwise."""
    return generate_sm2_key() if alg == "SM2SM3" else x25519.X25519PrivateKey.generate()


def init_pki(dir: Path, *, alg: str = "ES256", days: int = 365, force: bool = False) -> PkiLayout:
    """Create the development PKI under ``dir`` (see the module docstring) and return its layout.

    ``alg`` picks the suite:

    - ES256: P-256 gateway keys, X25519 encryption keys, a P-256 CA;
    - EdDSA: Ed25519 gateway keys, X25519 encryption keys, a P-256 CA;
    - SM2SM3 (the national suite): an SM2 CA signing with SM2-with-SM3, SM2 gateway keys and SM2 encryption keys.

    Platform and auditor keys are P-256 in every suite: they sign the HTTP JWTs (ES256) that the gateway checks
    with pyjwt, which has no SM2. Raises FileExistsError if any file of the layout exists, unless ``force``
    (which overwrites).
    """
    if alg not in ("ES256", "EdDSA", "SM2SM3"):
        raise ValueError(f"unsupported alg {alg!r}: use 'ES256', 'EdDSA' or 'SM2SM3'")
    if days <= 0:
        raise ValueError("days must be positive")
    layout = PkiLayout(Path(dir))
    if not force and layout.exists():
        raise FileExistsError(f"a PKI already exists in {layout.dir} (use force to overwrite it)")
    layout.dir.mkdir(parents=True, exist_ok=True)

    ca_cert, ca_key = make_ca(CA_NAME, days=days, alg="SM2SM3" if alg == "SM2SM3" else "ES256")
    write_certificate(layout.ca_cert, ca_cert)
    write_private_key(layout.ca_key, ca_key)
    for region in REGIONS:
        cert, key = issue_gateway_cert(ca_cert, ca_key, region, alg=alg, days=days)
        write_certificate(layout.gateway_cert(region), cert)
        write_private_key(layout.gateway_key(region), key)
        enc = _encryption_key(alg)
        write_private_key(layout.encryption_key(region), enc)
        write_public_key(layout.encryption_pub(region), enc.public_key())
        platform_key = ec.generate_private_key(ec.SECP256R1())
        write_private_key(layout.platform_key(region), platform_key)
        write_public_key(layout.platform_pub(region), platform_key.public_key())
    auditor_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(layout.auditor_key, auditor_key)
    write_public_key(layout.auditor_pub, auditor_key.public_key())
    return layout


@dataclass(frozen=True, slots=True)
class RotatedKeys:
    """The files of a region's next keys (README "Rotating keys"): certificate and signing key, encryption key
    pair."""

    certificate: Path
    private_key: Path
    encryption_key: Path
    encryption_pub: Path


def rotate_gateway_keys(layout: PkiLayout, region: str, tag: str, *, days: int = 365) -> RotatedKeys:
    """Issue `region` a new certificate (from the development CA, same suite as its current key) and a new
    encryption key pair, written beside the current files as ``<r>.<tag>.crt``, ``<r>.<tag>.key``,
    ``<r>.<tag>.enc.key`` and ``<r>.<tag>.enc.pub.pem``; the current files are left as they are (the overlap).
    FileExistsError if that tag was used already."""
    stem = layout.gateways_dir / f"{region.lower()}.{tag}"
    out = RotatedKeys(Path(f"{stem}.crt"), Path(f"{stem}.key"), Path(f"{stem}.enc.key"),
                      Path(f"{stem}.enc.pub.pem"))
    if any(p.exists() for p in (out.certificate, out.private_key, out.encryption_key, out.encryption_pub)):
        raise FileExistsError(f"keys tagged {tag!r} exist already for {region} in {layout.gateways_dir}")
    alg = alg_of_private_key(load_private_key(layout.gateway_key(region)))
    ca_key = load_private_key(layout.ca_key)
    cert, key = issue_gateway_cert(load_certificate(layout.ca_cert), ca_key, region, alg=alg, days=days)
    write_certificate(out.certificate, cert)
    write_private_key(out.private_key, key)
    enc = _encryption_key(alg)
    write_private_key(out.encryption_key, enc)
    write_public_key(out.encryption_pub, enc.public_key())
    return out
