"""Compact ES256 JWS tokens, parsed and verified with `cryptography` directly (the platform JWTs of auth.py).

pyjwt's decode cost about as much Python around the signature check as the check itself (it decodes each part,
parses the JSON with the standard library, looks the algorithm up and wraps the key per call). Here a token is
split and parsed once, strictly: base64url without padding in its one canonical spelling (crypto/jws.py), a
JSON object header whose `alg` is ES256 (`typ`, when given, JWT; `kid` a string; no `crit` extension: none is
understood), and a 64-byte r||s signature (RFC 7518 3.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from gateway.crypto.jws import b64url_decode, es256_verify

__all__ = ["InvalidToken", "Token", "parse"]


class InvalidToken(ValueError):
    """Why the token is not a valid ES256 compact JWS; the text never quotes the token."""


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(b64url_decode(segment))
    except ValueError as e:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        raise InvalidToken(f"the {what} is not base64url JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidToken(f"the {what} is not a JSON object")
    return doc


@dataclass(frozen=True, slots=True)
class Token:
    """A token split and its payload parsed, its signature not yet checked."""

    header_b64: str
    payload_b64: str
    signature_b64: str
    claims: dict[str, Any]

    def verify(self, key: EllipticCurvePublicKey) -> None:
        """The header's rules and the signature by `key`; InvalidToken otherwise."""
        header = _json_object(self.header_b64, "header")
        if header.get("alg") != "ES256":
            raise InvalidToken("the algorithm must be ES256")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise InvalidToken("typ, when given, must be JWT")
        if "kid" in header and not isinstance(header["kid"], str):
            raise InvalidToken("kid must be a string")
        if "crit" in header:
            raise InvalidToken("no critical header extension is supported")
        try:
            raw = b64url_decode(self.signature_b64)
        except ValueError as e:
            raise InvalidToken("the signature is not base64url") from e
        if len(raw) != 64:
            raise InvalidToken("an ES256 signature is 64 bytes (r || s)")
        if not es256_verify(key, raw, f"{self.header_b64}.{self.payload_b64}".encode("ascii")):
            raise InvalidToken("signature verification failed")


def parse(token: str) -> Token:
    """Split an ASCII compact JWS and parse its payload (the claims choose the key to verify it with)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a compact JWS (three dot-separated parts)")
    header_b64, payload_b64, signature_b64 = parts
    return Token(header_b64, payload_b64, signature_b64, _json_object(payload_b64, "payload"))
