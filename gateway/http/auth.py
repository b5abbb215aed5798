"""Platform and auditor authentication: short-lived JWTs signed by the caller's own key (RFC 7523 style).

`iss` names the caller, `aud` is this gateway, `exp` at most five minutes after `iat`, `jti` single use.
Only ES256 is accepted: `alg: none` and an HS256 token keyed with the public key both fail.

Per request the cost is one ES256 verification (http/es256.py, `cryptography` directly: ~62 us a token with the
claim checks, where pyjwt's decode took ~105 us, the signature itself being ~48 us) and the jti's write; the jtis
of the requests in flight together are written in one transaction (relay/coalesce.py), as their messages are
signed and published together.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from gateway.http import es256
from gateway.http.access_tokens import PREFIX as ACCESS_PREFIX
from gateway.http.access_tokens import AccessTokens, InvalidAccessToken, key_tag
from gateway.relay.coalesce import Coalescer
from gateway.state import StateStore
from gateway.wire.regions import gateway_audience
from gateway.wire.text import header_safe

AUDIT_SCOPE = "audit:read"
MAX_TOKEN_CHARS = 4096  # an ES256 token is ~400; refused before any parsing
LEEWAY_S = 5  # clock skew allowed on exp, iat and nbf


class AuthError(Exception):
    """Why a token was refused; the text goes into the 401 detail (never the token itself)."""


def one_authorization(values: Sequence[str]) -> str | None:
    """The one Authorization header of a request (None without one). Two are refused: a proxy and the gateway
    could each act on a different one."""
    if len(values) > 1:
        raise AuthError("more than one Authorization header")
    return values[0] if values else None


def _numeric_date(value: object) -> bool:
    """RFC 7519 NumericDate: a JSON number (pyjwt also takes numeric strings, which break arithmetic)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    kind: str  # "platform" or "auditor"
    scopes: frozenset[str]
    # Authenticated by an access token (POST /v1/token), not by one of its own single-use assertions.
    by_access_token: bool = False


def load_public_key(path: Path) -> EllipticCurvePublicKey:
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, EllipticCurvePublicKey):
        raise ValueError(f"{path}: expected a P-256 public key")
    return key


class Authenticator:
    def __init__(
        self,
        region: str,
        platforms: dict[str, EllipticCurvePublicKey],
        auditors: dict[str, EllipticCurvePublicKey],
        state: StateStore,
        max_lifetime_s: int = 300,
        access: AccessTokens | None = None,
    ) -> None:
        self._audience = gateway_audience(region)
        self._keys: dict[str, tuple[str, EllipticCurvePublicKey]] = {
            **{i: ("platform", k) for i, k in platforms.items()},
            **{i: ("auditor", k) for i, k in auditors.items()},
        }
        self._state = state
        self._max_lifetime_s = max_lifetime_s
        self._jtis: Coalescer[tuple[str, float], bool] = Coalescer(self._use_jtis)
        self.access = access  # None: access tokens are neither issued nor accepted
        self._key_tags = {i: key_tag(k.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
                          for i, (_, k) in self._keys.items()}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request; AuthError says why not. The jti is spent only for a token that verified; an
        access token has none (it is reused until it expires)."""
        granted = self._access_token(authorization)
        if granted is not None:
            return granted
        principal, jti, exp = self.verify(authorization)
        if not await self._jtis.submit((f"{principal.id}:{jti}", exp)):
            raise AuthError("token already used (jti replay)")
        return principal

    async def _use_jtis(self, items: list[tuple[str, float]]) -> list[bool]:
        return self._state.use_jtis(items)

    def _access_token(self, authorization: str | None) -> Principal | None:
        """The caller of an access token (None: the credential is not one, so it is an assertion or nothing)."""
        if not authorization or not authorization.startswith("Bearer " + ACCESS_PREFIX):
            return None
        token = authorization[7:].strip()
        if self.access is None:
            raise AuthError("access tokens are not accepted here")
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthError(f"malformed token: not an access token of at most {MAX_TOKEN_CHARS} ASCII characters")
        try:
            granted = self.access.verify(token, self._key_tags)
        except InvalidAccessToken as e:
            raise AuthError(f"invalid access token: {e}") from e
        return Principal(granted.sub, granted.kind, frozenset(granted.scope.split()), by_access_token=True)

    def issue(self, principal: Principal) -> tuple[str, int]:
        """An access token for a caller authenticated by its own assertion, and its lifetime in seconds."""
        if self.access is None:
            raise AuthError("access tokens are not issued here")
        if principal.by_access_token:  # else a stolen token could be renewed for ever
            raise AuthError("an access token is traded for an assertion only, not for another access token")
        return self.access.issue(principal.id, principal.kind, " ".join(sorted(principal.scopes)),
                                 self._key_tags[principal.id])

    def verify(self, authorization: str | None) -> tuple[Principal, str, float]:
        """The token's signature and claims (CPU only): its principal, jti and exp."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing bearer token")
        token = authorization[7:].strip()
        # A compact JWS is base64url and dots: anything else (a non-UTF-8 byte arrives as a surrogate) is refused
        # here, without echoing it.
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthError(f"malformed token: not a compact JWS of at most {MAX_TOKEN_CHARS} ASCII characters")
        try:
            parsed = es256.parse(token)
        except es256.InvalidToken as e:
            raise AuthError(f"malformed token: {e}") from e
        claims = parsed.claims
        issuer = claims.get("iss")  # unverified yet: it only chooses the key the whole token is verified with
        if not isinstance(issuer, str) or issuer not in self._keys:
            raise AuthError("unknown issuer")
        kind, key = self._keys[issuer]
        try:
            parsed.verify(key)
        except es256.InvalidToken as e:
            raise AuthError(f"invalid token: {e}") from e
        exp = self._check_claims(claims)
        return Principal(id=issuer, kind=kind, scopes=frozenset(claims.get("scope", "").split())), claims["jti"], exp

    def _check_claims(self, claims: dict[str, Any]) -> float:
        """The registered claims as pyjwt checked them (with `require` exp, iat, iss, aud, jti and 5 s leeway),
        plus this gateway's rules; exp as a float."""
        for name in ("exp", "iat", "aud", "jti"):
            if claims.get(name) is None:
                raise AuthError(f"invalid token: the {name} claim is required")
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", 0)
        if not (_numeric_date(exp) and _numeric_date(iat) and _numeric_date(nbf)):
            raise AuthError("invalid token: exp, iat and nbf must be numbers")
        now = time.time()
        # int(): whole seconds, as pyjwt compared them
        if int(exp) <= now - LEEWAY_S:
            raise AuthError("invalid token: expired")
        if int(iat) > now + LEEWAY_S or int(nbf) > now + LEEWAY_S:
            raise AuthError("invalid token: not yet valid")
        if exp - iat > self._max_lifetime_s:
            raise AuthError(f"token lifetime exceeds {self._max_lifetime_s} s")
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if (not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences)
                or self._audience not in audiences):
            raise AuthError("invalid token: the audience is not this gateway")
        if "sub" in claims and not isinstance(claims["sub"], str):
            raise AuthError("invalid token: sub must be a string")
        if not isinstance(claims.get("scope", ""), str):
            raise AuthError("invalid token: scope must be a string")
        if not header_safe(claims["jti"], 256):  # a lone surrogate (a JSON escape) cannot be stored
            raise AuthError("invalid token: jti must be 1 to 256 characters, no control characters")
        # exp is finite and bounded here: after now - leeway and at most max_lifetime_s after iat <= now + leeway.
        return float(exp)


class TokenMinter:
    """Mints fresh single-use tokens for one caller; the key is loaded once."""

    def __init__(self, issuer: str, private_key_path: Path, region: str, scope: str | None = None) -> None:
        key = load_pem_private_key(private_key_path.read_bytes(), password=None)
        if not isinstance(key, EllipticCurvePrivateKey):
            raise ValueError(f"{private_key_path}: expected a P-256 private key")
        self._key = key
        self._issuer = issuer
        self._audience = gateway_audience(region)
        self._scope = scope

    def mint(self, lifetime_s: int = 300) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer, "sub": self._issuer, "aud": self._audience, "iat": now, "exp": now + lifetime_s,
            "jti": str(uuid.uuid4()),
        }
        if self._scope:
            claims["scope"] = self._scope
        return jwt.encode(claims, self._key, algorithm="ES256")

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint()}"}
