"""Who may sign: the gateway certificates a receiving gateway trusts, and their revocations.

A certificate is validated once, when it is added (directly issued by one of the roots, not a CA, exactly
one ``urn:yrdx:region:<R>`` SAN with R a known region, a supported key: P-256, Ed25519 or SM2). Roots may be of
either suite, and both at once: an SM2 root's signatures (SM2-with-SM3) are checked with
:func:`gateway.crypto.sm2.sm2_verify_issued_by`, since ``cryptography`` cannot. Per message,
:meth:`TrustStore.signer` is a dictionary lookup by the JWS header's ``x5t#S256`` plus the revocation and
validity-window checks. The caller compares ``signer.region`` with the envelope's ``from`` and verifies the
signature with ``signer.public_key``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from gateway.crypto.jws import thumbprint_s256
from gateway.crypto.keys import PublicKey, certificate_regions, public_key_of
from gateway.crypto.sm2 import is_sm2_certificate, sm2_verify_issued_by
from gateway.wire.regions import REGIONS

__all__ = ["TRUST_ERROR_CODES", "TrustCode", "TrustError", "TrustStore", "TrustedSigner"]

TrustCode: TypeAlias = Literal[
    "untrusted_signer", "certificate_expired", "certificate_not_yet_valid", "certificate_revoked"
]
TRUST_ERROR_CODES: Final[frozenset[str]] = frozenset(
    {"untrusted_signer", "certificate_expired", "certificate_not_yet_valid", "certificate_revoked"}
)


class TrustError(Exception):
    """A signer that must not be trusted; ``code`` is one of TRUST_ERROR_CODES (a stable, machine-readable
    reason for the DLQ and the audit record), ``detail`` says why in words."""

    def __init__(self, code: TrustCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: TrustCode = code
        self.detail = detail

    def __reduce__(self) -> tuple[type[TrustError], tuple[TrustCode, str]]:
        return (type(self), (self.code, self.detail))


@dataclass(frozen=True, slots=True)
class TrustedSigner:
    """A validated gateway certificate. ``not_before``/``not_after`` (timezone-aware, UTC) are the window in
    which the whole chain is valid: the certificate's own window intersected with its root's."""

    region: str
    thumbprint: str
    public_key: PublicKey
    not_before: dt.datetime
    not_after: dt.datetime
    subject: str


def _untrusted(detail: str) -> TrustError:
    return TrustError("untrusted_signer", detail)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


class TrustStore:
    """The roots, the gateway certificates validated against them (by thumbprint), the revoked thumbprints."""

    def __init__(self, roots: Iterable[x509.Certificate]) -> None:
        self._roots: list[x509.Certificate] = []
        for root in roots:
            if not _is_ca(root):
                raise ValueError(f"trust root {root.subject.rfc4514_string()} is not a CA certificate")
            usage = _key_usage(root)
            if usage is not None and not usage.key_cert_sign:
                raise ValueError(f"trust root {root.subject.rfc4514_string()} may not sign certificates")
            self._roots.append(root)
        self._sm2_roots = [is_sm2_certificate(root) for root in self._roots]
        self._signers: dict[str, TrustedSigner] = {}
        self._certificates: dict[str, x509.Certificate] = {}
        self._revoked: set[str] = set()

    @classmethod
    def from_files(cls, ca_files: Sequence[Path], certificate_files: Sequence[Path] = ()) -> TrustStore:
        """Roots from the PEM files ``ca_files`` (each may hold several certificates), then the gateway
        certificates of ``certificate_files``, each validated (TrustError if one is not acceptable)."""
        roots = [
            cert for path in ca_files for cert in x509.load_pem_x509_certificates(Path(path).read_bytes())
        ]
        if not roots:
            raise ValueError("no trust root given")
        store = cls(roots)
        for path in certificate_files:
            for cert in x509.load_pem_x509_certificates(Path(path).read_bytes()):
                store.add_certificate(cert)
        return store

    @property
    def roots(self) -> list[x509.Certificate]:
        return list(self._roots)

    def _issuing_root(self, cert: x509.Certificate) -> x509.Certificate | None:
        for root, sm2 in zip(self._roots, self._sm2_roots, strict=True):
            if root.subject != cert.issuer:
                continue
            if sm2:
                if not sm2_verify_issued_by(cert, root):  # issuer name and signature
                    continue
                return root
            try:
                cert.verify_directly_issued_by(root)  # issuer name and signature
            except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):  # (an SM2-signed cert)
                continue
            return root
        return None

    def add_certificate(self, cert: x509.Certificate) -> TrustedSigner:
        """Validate a gateway certificate and remember it; idempotent. TrustError("untrusted_signer") if it is
        not issued by one of the roots, is a CA, may not sign (keyUsage), has an unsupported key, or does not
        name exactly one known region. Validity and revocation are checked per message by :meth:`signer`."""
        thumbprint = thumbprint_s256(cert)
        known = self._signers.get(thumbprint)
        if known is not None:
            return known
        try:
            subject = cert.subject.rfc4514_string()
        except ValueError as exc:  # a subject that does not parse (the certificate came from the wire, in x5c)
            raise _untrusted(f"certificate {thumbprint} has a malformed subject: {exc}") from None
        try:
            root = self._issuing_root(cert)
            if root is None:
                raise _untrusted(f"certificate {thumbprint} ({subject}) is not issued by a trusted root")
            if _is_ca(cert):
                raise _untrusted(f"certificate {thumbprint} ({subject}) is a CA, not a gateway certificate")
            usage = _key_usage(cert)
            if usage is not None and not usage.digital_signature:
                raise _untrusted(f"certificate {thumbprint} ({subject}) may not sign (no digitalSignature)")
            try:
                public_key = public_key_of(cert)
            except TypeError:
                raise _untrusted(f"certificate {thumbprint} ({subject}) has an unsupported key type") from None
            regions = certificate_regions(cert)
        except ValueError as exc:  # a malformed extension (TrustError is not a ValueError: it passes through)
            raise _untrusted(f"certificate {thumbprint} ({subject}) is malformed: {exc}") from None
        if len(regions) != 1 or regions[0] not in REGIONS:
            raise _untrusted(
                f"certificate {thumbprint} ({subject}) must name exactly one known region, names {regions}"
            )
        signer = TrustedSigner(
            region=regions[0],
            thumbprint=thumbprint,
            public_key=public_key,
            not_before=max(cert.not_valid_before_utc, root.not_valid_before_utc),
            not_after=min(cert.not_valid_after_utc, root.not_valid_after_utc),
            subject=subject,
        )
        self._certificates[thumbprint] = cert
        self._signers[thumbprint] = signer
        return signer

    def revoke(self, thumbprint: str) -> None:
        """Revoke a certificate by thumbprint (also one not seen yet)."""
        self._revoked.add(thumbprint)

    def revoked_count(self) -> int:
        return len(self._revoked)

    def is_revoked(self, thumbprint: str) -> bool:
        return thumbprint in self._revoked

    def signer(self, header: Mapping[str, object], now: dt.datetime) -> TrustedSigner:
        """The trusted signer named by a JWS protected header at time ``now`` (timezone-aware), or TrustError.

        An unknown ``x5t#S256`` is accepted only with an ``x5c`` whose first certificate has that thumbprint
        and passes :meth:`add_certificate`.
        """
        signer = self.learn(header)
        thumbprint = signer.thumbprint
        if thumbprint in self._revoked:
            raise TrustError("certificate_revoked", f"certificate {thumbprint} ({signer.subject}) is revoked")
        if now < signer.not_before:
            raise TrustError(
                "certificate_not_yet_valid",
                f"certificate {thumbprint} ({signer.subject}) is valid from {signer.not_before.isoformat()}",
            )
        if now > signer.not_after:
            raise TrustError(
                "certificate_expired",
                f"certificate {thumbprint} ({signer.subject}) expired at {signer.not_after.isoformat()}",
            )
        return signer

    def learn(self, header: Mapping[str, object]) -> TrustedSigner:
        """The certificate a JWS protected header names by ``x5t#S256``: known already, or the first of its
        ``x5c``, validated by :meth:`add_certificate` and remembered (TrustError otherwise). Nothing about
        validity now or revocation: :meth:`signer` checks those."""
        thumbprint = header.get("x5t#S256")
        if not isinstance(thumbprint, str):
            raise _untrusted("no x5t#S256 in the header")
        signer = self._signers.get(thumbprint)
        return signer if signer is not None else self._learn_from_x5c(thumbprint, header.get("x5c"))

    def _learn_from_x5c(self, thumbprint: str, x5c: object) -> TrustedSigner:
        if x5c is None:
            raise _untrusted(f"unknown certificate {thumbprint}")
        if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
            raise _untrusted("malformed x5c header")
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
        except (binascii.Error, ValueError):
            raise _untrusted("x5c does not hold a DER certificate") from None
        actual = thumbprint_s256(cert)
        if actual != thumbprint:
            raise _untrusted(f"x5c certificate {actual} does not match x5t#S256 {thumbprint}")
        return self.add_certificate(cert)

    def region_of(self, thumbprint: str) -> str | None:
        signer = self._signers.get(thumbprint)
        return signer.region if signer is not None else None

    def certificate(self, thumbprint: str) -> x509.Certificate | None:
        return self._certificates.get(thumbprint)

    def known(self) -> list[TrustedSigner]:
        return list(self._signers.values())
