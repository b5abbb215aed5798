"""JWS with detached content (RFC 7515 appendix F) over exact bytes, written directly on `cryptography`.

The envelope bytes travel unchanged (Kafka record value, webhook body, audit export) and the signature
travels beside them in the compact detached form ``<b64url(protected header)>..<b64url(signature)>``. The
signing input is the standard JWS one, ``b64url(protected header) "." b64url(content)``, so any JOSE library
verifies it once the payload part is put back (``header.b64url(content).signature``). The RFC 7797
unencoded-payload variant (``"b64": false``) is neither produced nor accepted.

The protected header is ``{"alg", "kid", "x5t#S256"}`` (plus ``x5c`` if asked for); it is serialized once per
:class:`Signer`, so signing a message costs one base64 pass over the content and one signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.crypto.keys import (
    ALGORITHMS,
    Alg,
    PrivateKey,
    alg_of_private_key,
    alg_of_public_key,
    certificate_regions,
    same_public_key,
    sha256_fingerprint,
)

__all__ = [
    "MAX_JWS_LENGTH",
    "DetachedJws",
    "JwsError",
    "Signer",
    "b64url_decode",
    "b64url_encode",
    "parse_detached",
    "thumbprint_s256",
    "verify_detached",
]

# Upper bound on a detached JWS accepted by parse_detached (a header with an x5c chain is ~1 KB).
MAX_JWS_LENGTH: Final = 16384

_B64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64URL_VALUES: Final = {c: i for i, c in enumerate(_B64URL_ALPHABET)}
# base64url -> standard alphabet; a byte outside the url alphabet maps to "*", which strict decoding rejects.
_B64URL_TO_STD: Final = bytes(
    _B64_ALPHABET[_B64URL_VALUES[c]] if c in _B64URL_VALUES else ord("*") for c in range(256)
)
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_P256_BYTES: Final = 32


class JwsError(ValueError):
    """A malformed or unsupported JWS (not a bad signature: verify_detached returns False for that)."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(data: str | bytes) -> bytes:
    """Strict base64url-without-padding decoding: ValueError on padding, foreign characters (including the
    standard alphabet's ``+`` and ``/``) or non-canonical trailing bits, so a byte string has one encoding."""
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    tail = len(raw) % 4
    if tail == 0:
        return binascii.a2b_base64(raw.translate(_B64URL_TO_STD), strict_mode=True)
    # The last character of a 2- or 3-character group carries 4 or 2 unused bits, which must be zero.
    if tail == 1 or _B64URL_VALUES.get(raw[-1], 0x3F) & (0x0F if tail == 2 else 0x03):
        raise ValueError("invalid base64url")
    padding = b"==" if tail == 2 else b"="
    return binascii.a2b_base64(raw.translate(_B64URL_TO_STD) + padding, strict_mode=True)


def thumbprint_s256(cert: x509.Certificate) -> str:
    """The x5t#S256 value of a certificate: base64url (no padding) SHA-256 of its DER encoding."""
    return b64url_encode(sha256_fingerprint(cert))


class Signer:
    """Signs content bytes as a detached JWS with one private key and its certificate.

    ``alg`` is "ES256" for a P-256 key and "EdDSA" for an Ed25519 key. ``kid`` defaults to
    ``gw-<region lower>-<first 16 hex digits of the certificate's SHA-256>`` (``x5t-<hex>`` when the
    certificate names no single region). ``include_x5c`` adds the certificate (standard base64 DER) as
    ``x5c`` so that a receiver that has not seen it yet can validate it against its root.
    """

    __slots__ = (
        "_key",
        "_prefix_dot",
        "_sig_prefix",
        "alg",
        "certificate",
        "header",
        "kid",
        "region",
        "thumbprint",
    )

    def __init__(
        self,
        private_key: PrivateKey,
        certificate: x509.Certificate,
        *,
        include_x5c: bool = False,
        kid: str | None = None,
    ) -> None:
        self.alg: Alg = alg_of_private_key(private_key)
        cert_key = certificate.public_key()
        if (
            not isinstance(cert_key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey))
            or alg_of_public_key(cert_key) != self.alg
            or not same_public_key(private_key.public_key(), cert_key)
        ):
            raise ValueError("the private key does not belong to the certificate")
        self._key = private_key
        self.certificate = certificate
        digest = sha256_fingerprint(certificate)
        self.thumbprint: str = b64url_encode(digest)
        regions = certificate_regions(certificate)
        self.region: str | None = regions[0] if len(regions) == 1 else None
        if kid is None:
            short = digest.hex()[:16]
            kid = f"gw-{self.region.lower()}-{short}" if self.region else f"x5t-{short}"
        self.kid: str = kid
        header: dict[str, Any] = {"alg": self.alg, "kid": kid, "x5t#S256": self.thumbprint}
        if include_x5c:
            der = certificate.public_bytes(serialization.Encoding.DER)
            header["x5c"] = [base64.b64encode(der).decode("ascii")]
        self.header: dict[str, Any] = header
        header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
        self._prefix_dot = header_b64.encode("ascii") + b"."  # start of the signing input
        self._sig_prefix = header_b64 + ".."  # start of the compact detached JWS

    def sign(self, content: bytes) -> str:
        """The compact detached JWS ``<b64url(header)>..<b64url(signature)>`` over exactly ``content``."""
        signing_input = self._prefix_dot + base64.urlsafe_b64encode(content).rstrip(b"=")
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(signing_input, _ECDSA_SHA256))
            signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
        else:
            signature = key.sign(signing_input)
        return self._sig_prefix + b64url_encode(signature)

    def __repr__(self) -> str:
        return f"Signer(alg={self.alg!r}, kid={self.kid!r}, thumbprint={self.thumbprint!r})"


@dataclass(frozen=True, slots=True)
class DetachedJws:
    """A parsed (not yet verified) detached JWS."""

    header: dict[str, Any]
    signing_prefix: bytes  # the base64url protected header, as received
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    @property
    def thumbprint(self) -> str:
        return str(self.header["x5t#S256"])


def parse_detached(jws: str | bytes) -> DetachedJws:
    """Parse ``<b64url(header)>..<b64url(signature)>``; JwsError if it is malformed or unsupported."""
    if len(jws) > MAX_JWS_LENGTH:
        raise JwsError(f"JWS longer than {MAX_JWS_LENGTH} characters")
    if isinstance(jws, str):
        try:
            raw = jws.encode("ascii")
        except UnicodeEncodeError:
            raise JwsError("JWS contains non-ASCII characters") from None
    else:
        raw = bytes(jws)
    parts = raw.split(b".")
    if len(parts) != 3:
        raise JwsError("a detached JWS has three dot-separated parts")
    header_b64, payload_b64, signature_b64 = parts
    if payload_b64:
        raise JwsError("the payload part of a detached JWS must be empty")
    if not header_b64 or not signature_b64:
        raise JwsError("empty header or signature part")
    try:
        header_json = b64url_decode(header_b64)
        signature = b64url_decode(signature_b64)
    except ValueError:
        raise JwsError("header or signature is not base64url") from None
    try:
        header = orjson.loads(header_json)
    except orjson.JSONDecodeError:
        raise JwsError("protected header is not JSON") from None
    if not isinstance(header, dict):
        raise JwsError("protected header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise JwsError(f"unsupported alg {alg!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwsError("missing kid")
    x5t = header.get("x5t#S256")
    if (
        not isinstance(x5t, str)
        or len(x5t) != 43  # 32 bytes
        or x5t.encode("ascii", "replace").translate(None, _B64URL_ALPHABET)
    ):
        raise JwsError("missing or malformed x5t#S256")
    if "crit" in header or "b64" in header:
        # RFC 7515 4.1.11: critical extensions we do not implement must be rejected (RFC 7797 b64 included).
        raise JwsError("unsupported critical header parameters")
    return DetachedJws(header=header, signing_prefix=header_b64, signature=signature)


def verify_detached(parsed: DetachedJws, content: bytes, public_key: object) -> bool:
    """True if ``parsed`` is a valid signature over exactly ``content`` by ``public_key``.

    The key type must match the header's alg (a P-256 key for ES256, an Ed25519 key for EdDSA): any mismatch,
    a wrong signature length or a bad signature returns False; it never raises for those.
    """
    alg = parsed.header.get("alg")
    signature = parsed.signature
    signing_input = parsed.signing_prefix + b"." + base64.urlsafe_b64encode(content).rstrip(b"=")
    try:
        if alg == "ES256":
            if (
                not isinstance(public_key, ec.EllipticCurvePublicKey)
                or not isinstance(public_key.curve, ec.SECP256R1)
                or len(signature) != 2 * _P256_BYTES
            ):
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:_P256_BYTES], "big"), int.from_bytes(signature[_P256_BYTES:], "big")
            )
            public_key.verify(der, signing_input, _ECDSA_SHA256)
            return True
        if alg == "EdDSA":
            if not isinstance(public_key, ed25519.Ed25519PublicKey) or len(signature) != 64:
                return False
            public_key.verify(signature, signing_input)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
