"""Access tokens (OAuth 2.0 style): a caller trades one of its single-use ES256 assertions for a short-lived token
the gateway itself issues, and reuses that token until it expires.

Why: a platform's own assertion costs the gateway an ES256 verification (~50-80 us here) and a `jti` write per
request, ~18 % of the sending gateway's CPU for single-message requests. An access token is checked with one
HMAC-SHA256 and a few comparisons. The assertion stays the only way in (`POST /v1/token` takes assertions only,
so a token can never renew itself), and what a token grants is exactly what its assertion granted.

Format: ``yat1.<claims>.<mac>``, both parts base64url without padding; the claims a JSON object ``{sub, kind,
scope, aud, iat, exp, kt, tid}``; the MAC HMAC-SHA256 over ``yat1.<claims>``. The prefix keeps it apart from a
JWT (three parts of which the first is a header), so no JWT parser ever sees it and no JWT is ever read as one.

The MAC key is derived (HKDF-SHA256) from the region's identity private key file and the region: every replica
of a region shares that key file, so a token from one replica is good at the others with no new secret to deploy,
and a new identity key ends every token issued under the old one. `kt` is a digest of the caller's public key:
a caller whose key was replaced (or removed) in the config loses its tokens at the gateway's next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.jws import b64url_decode, b64url_encode

__all__ = ["PREFIX", "AccessTokenHolder", "AccessTokens", "Granted", "InvalidAccessToken", "key_tag"]

PREFIX: Final = "yat1."
_INFO: Final = b"yrdx access token v1 "
LEEWAY_S: Final = 5


class InvalidAccessToken(ValueError):
    """Why an access token is refused; the text never quotes the token."""


@dataclass(frozen=True, slots=True)
class Granted:
    """What a valid access token names: its caller (id and kind), scopes and expiry."""

    sub: str
    kind: str
    scope: str
    exp: int


def key_tag(public_key_der: bytes) -> str:
    """A short digest naming a caller's public key (16 bytes of SHA-256, base64url)."""
    return b64url_encode(hashlib.sha256(public_key_der).digest()[:16])


class AccessTokens:
    def __init__(self, region: str, identity_key: bytes, audience: str, lifetime_s: int = 300) -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                         info=_INFO + region.encode()).derive(identity_key)
        self._audience = audience
        self.lifetime_s = lifetime_s

    def _mac(self, signed: bytes) -> bytes:
        return hmac.digest(self._key, signed, "sha256")

    def issue(self, sub: str, kind: str, scope: str, kt: str, now: float | None = None) -> tuple[str, int]:
        """A token for the caller and how many seconds it lives."""
        iat = int(time.time() if now is None else now)
        claims = {"sub": sub, "kind": kind, "scope": scope, "aud": self._audience, "iat": iat,
                  "exp": iat + self.lifetime_s, "kt": kt, "tid": secrets.token_urlsafe(12)}
        signed = PREFIX + b64url_encode(orjson.dumps(claims))
        return f"{signed}.{b64url_encode(self._mac(signed.encode('ascii')))}", self.lifetime_s

    def verify(self, token: str, key_tags: dict[str, str]) -> Granted:
        """The token's grant, if this gateway issued it, it has not expired and its caller's key is still the
        one it was issued to (`key_tags`: caller id -> key_tag of its configured key)."""
        signed, dot, mac_b64 = token.rpartition(".")
        if not dot or not signed.startswith(PREFIX) or "." in signed[len(PREFIX):]:
            raise InvalidAccessToken("not an access token (yat1.<claims>.<mac>)")
        try:
            mac = b64url_decode(mac_b64)
        except ValueError as e:
            raise InvalidAccessToken("the MAC is not base64url") from e
        if not hmac.compare_digest(mac, self._mac(signed.encode("ascii"))):
            raise InvalidAccessToken("not issued by this region's gateway (MAC mismatch)")
        # The MAC held, so the claims are ours: their shapes were fixed when they were issued.
        claims = orjson.loads(b64url_decode(signed[len(PREFIX):]))
        if claims["aud"] != self._audience:
            raise InvalidAccessToken("the audience is not this gateway")
        if claims["exp"] <= time.time() - LEEWAY_S:
            raise InvalidAccessToken("expired: trade a fresh assertion at POST /v1/token")
        if key_tags.get(claims["sub"]) != claims["kt"]:
            raise InvalidAccessToken("the caller's key changed or it is no longer configured here")
        return Granted(claims["sub"], claims["kind"], claims["scope"], claims["exp"])


# --- the caller's side ------------------------------------------------------------------------------------

REFRESH_MARGIN_S: Final = 30  # a token this close to its expiry is traded again before it is used


class AccessTokenHolder:
    """A caller's current access token, traded at `POST /v1/token` for one of its fresh assertions (`assertion()`,
    an Authorization header) when it has none or the one it has expires within REFRESH_MARGIN_S; `trade(headers)`
    posts that request and returns its status and body. Concurrent callers share one trade."""

    def __init__(self, assertion: Callable[[], dict[str, str]],
                 trade: Callable[[dict[str, str]], Awaitable[tuple[int, bytes]]]) -> None:
        self._assertion = assertion
        self._trade = trade
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def header(self) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._refresh_at:
            async with self._lock:
                if self._token is None or time.monotonic() >= self._refresh_at:
                    status, raw = await self._trade(self._assertion())
                    if status != 200:
                        raise InvalidAccessToken(f"POST /v1/token answered {status}: {raw[:200]!r}")
                    doc = orjson.loads(raw)
                    self._token = str(doc["access_token"])
                    self._refresh_at = time.monotonic() + int(doc["expires_in"]) - REFRESH_MARGIN_S
        return {"Authorization": f"Bearer {self._token}"}
