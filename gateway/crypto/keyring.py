"""Encryption keys over time: the keys a gateway opens with, and the peers' keys it seals to.

A key rotation has an overlap: the receiving gateway already holds its new key while messages sealed to the old
one are still on the way (on the inbox topic, in the pull inbox, in the DLQ), so it opens with either. Every
sealed payload names its key: the JWE ``kid`` is ``<REGION>:<16 hex digits of the SHA-256 of the public key's
SubjectPublicKeyInfo>`` (:func:`encryption_kid`), so :class:`OpenerRing` picks the one key that opens it instead
of trying each. A payload whose ``kid`` is only a region (sealed before kids named keys), or that has none (any
JOSE library's JWE), is tried with every key held, the current one first.

On the sending side :class:`PeerSealers` holds one sealer per peer region and replaces it when a newer key of that
region is learned (a statement on ``yrdx.trust``, gateway.relay.trust_updates): sealing switches to the new key
from the next message. A statement older than the key held is ignored, so a replayed old statement cannot switch
a peer back to a key its owner has dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping, Sequence

import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.crypto.jws import b64url_decode
from gateway.crypto.keys import EncryptionPrivateKey, EncryptionPublicKey
from gateway.crypto.seal import Opener, Sealer, SealError  # (seal, not seal_base: it loads both suites)

__all__ = ["OpenerRing", "PeerSealers", "encryption_kid"]

# Headers of the JWEs seen lately -> the opener for their kid (a sender reuses one header for a minute).
_HEADER_CACHE = 256


def encryption_kid(region: str, key: EncryptionPublicKey) -> str:
    """The kid naming ``key`` of ``region``: ``SH:1f2e...`` (the first 16 hex digits of SHA-256 over its DER
    SubjectPublicKeyInfo)."""
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"{region}:{hashlib.sha256(der).hexdigest()[:16]}"


class OpenerRing(Opener):
    """Opens with whichever of this gateway's keys a payload was sealed to. The first key is the current one
    (what peers are told to seal to), the others are kept for the overlap. :meth:`replace` swaps the keys in
    place (a reload without a restart); a payload sealed to a key no longer held fails with SealError, as one
    sealed to a stranger's key does."""

    def __init__(self, region: str, keys: Sequence[EncryptionPrivateKey], cache: int = 64) -> None:
        super().__init__(cache)
        self._region = region
        self._openers: dict[str, Opener] = {}
        self._headers: dict[str, Opener] = {}
        self.replace(keys, cache)

    def replace(self, keys: Sequence[EncryptionPrivateKey], cache: int = 64) -> None:
        """Hold ``keys`` from now on (the current one first); openers of keys kept are reused with their caches."""
        if not keys:
            raise ValueError("an opener needs at least one key")
        openers: dict[str, Opener] = {}
        self._current = keys[0]
        for key in keys:
            kid = encryption_kid(self._region, key.public_key())
            openers[kid] = self._openers.get(kid) or Opener.for_key(key, cache)
        self._openers = openers
        self._headers = {}

    @property
    def current_kid(self) -> str:
        return next(iter(self._openers))

    @property
    def current_public_key(self) -> EncryptionPublicKey:
        return self._current.public_key()

    def kids(self) -> list[str]:
        """The kids of the keys held, the current one first."""
        return list(self._openers)

    def open(self, jwe: str) -> bytes:
        header_b64 = jwe.partition(".")[0]
        opener = self._headers.get(header_b64)
        if opener is None:
            opener = self._opener_for(header_b64)
            if opener is None:  # no kid, or one that names only the region
                return self._open_with_any(jwe)
            if len(self._headers) >= _HEADER_CACHE:
                self._headers.clear()
            self._headers[header_b64] = opener
        return opener.open(jwe)

    def _opener_for(self, header_b64: str) -> Opener | None:
        try:
            header = orjson.loads(b64url_decode(header_b64))
        except (ValueError, orjson.JSONDecodeError) as e:
            raise SealError(f"malformed sealed payload: {e}") from e
        if not isinstance(header, dict):
            raise SealError("malformed sealed payload: the header is not an object")
        kid = header.get("kid")
        if kid is None or kid == self._region:
            return None
        opener = self._openers.get(kid)
        if opener is None:
            raise SealError(f"sealed to key {kid}, which this gateway does not hold (held: {', '.join(self._openers)})")
        return opener

    def _open_with_any(self, jwe: str) -> bytes:
        last: SealError | None = None
        for opener in self._openers.values():
            try:
                return opener.open(jwe)
            except SealError as e:
                last = e
        assert last is not None  # noqa: S101 (there is always at least one key)
        raise last


class PeerSealers(Mapping[str, Sealer]):
    """One sealer per peer region, for its newest known encryption key. Keys from the config count as the oldest
    (``published_at`` None); :meth:`learn` replaces a region's sealer with a newer key's."""

    def __init__(self, keys: Mapping[str, EncryptionPublicKey]) -> None:
        self._sealers: dict[str, Sealer] = {}
        self._kids: dict[str, str] = {}
        self._published: dict[str, dt.datetime] = {}
        for region, key in keys.items():
            self._set(region, key)

    def _set(self, region: str, key: EncryptionPublicKey) -> str:
        kid = encryption_kid(region, key)
        self._sealers[region] = Sealer.for_key(key, kid=kid)
        self._kids[region] = kid
        return kid

    def learn(self, region: str, key: EncryptionPublicKey, published_at: dt.datetime) -> bool:
        """Seal for ``region`` with ``key`` from now on, unless a key published later (or the same key) is held
        already; True when the sealer changed."""
        if region in self._published and published_at <= self._published[region]:
            return False
        self._published[region] = published_at
        if self._kids.get(region) == encryption_kid(region, key):
            return False
        self._set(region, key)
        return True

    def kid(self, region: str) -> str | None:
        """The kid sealed to for ``region`` now."""
        return self._kids.get(region)

    def __getitem__(self, region: str) -> Sealer:
        return self._sealers[region]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sealers)

    def __len__(self) -> int:
        return len(self._sealers)
