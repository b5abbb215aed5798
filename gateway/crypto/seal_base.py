"""What every sealing suite shares: SealError, the Sealer and Opener bases, and the choice of suite by key type.

A suite subclasses :class:`Sealer` and :class:`Opener` naming the key type it serves (``class X25519Sealer(Sealer,
key=X25519PublicKey)``); :meth:`Sealer.for_key` and :meth:`Opener.for_key` pick the subclass registered for the
type of the key. The suites are seal.py (JOSE: X25519, AES-GCM) and seal_sm.py (the national suite: SM2, SM4-GCM);
import :mod:`gateway.crypto.seal`, which loads both.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from gateway.crypto.keys import EncryptionPrivateKey, EncryptionPublicKey

__all__ = ["Opener", "SealError", "Sealer"]


class SealError(ValueError):
    """A sealed payload that cannot be opened: malformed, not for this key, or tampered with."""


class Sealer(ABC):
    """Seals payloads for one recipient gateway, in the suite of the recipient's key (:meth:`for_key`).

    The costly public-key step (a key agreement, or a key transport) is renewed only every ``rotate_s`` seconds
    or ``rotate_uses`` messages; each message still gets its own nonce (and, in the JOSE suite, content key)."""

    # (public key type, the suite's sealer), in the order the suites were defined
    _suites: ClassVar[list[tuple[type, Callable[..., Sealer]]]] = []

    def __init_subclass__(cls, key: type | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if key is not None:
            Sealer._suites.append((key, cls))

    def __init__(self, kid: str, rotate_s: float = 60.0, rotate_uses: int = 10_000) -> None:
        self._kid = kid
        self._rotate_s = rotate_s
        self._rotate_uses = rotate_uses
        self._uses = rotate_uses  # forces a renewal on first use
        self._born = 0.0

    @staticmethod
    def for_key(recipient: EncryptionPublicKey, kid: str, rotate_s: float = 60.0, rotate_uses: int = 10_000) -> Sealer:
        """The sealer of the recipient's suite: X25519 (JOSE: ECDH-ES+A256KW, A256GCM) or SM2 (the national
        suite: SM2, SM4GCM); TypeError for a key of no suite."""
        for key_type, suite in Sealer._suites:
            if isinstance(recipient, key_type):
                return suite(recipient, kid, rotate_s, rotate_uses)
        raise TypeError(f"no sealing suite for a {type(recipient).__name__} key")

    def seal(self, plaintext: bytes) -> str:
        """The compact JWE of ``plaintext`` for the recipient."""
        if self._uses >= self._rotate_uses or time.monotonic() - self._born > self._rotate_s:
            self._renew()
            self._born, self._uses = time.monotonic(), 0
        self._uses += 1
        return self._seal(plaintext)

    @abstractmethod
    def _renew(self) -> None:
        """A fresh public-key step (ephemeral key or content key) for the messages to come."""

    @abstractmethod
    def _seal(self, plaintext: bytes) -> str: ...


class Opener(ABC):
    """Opens what was sealed for this gateway's key, in that key's suite (:meth:`for_key`); SealError if it
    cannot. Keys derived from the public-key step are cached (``cache`` entries), so that step runs once per
    sender rotation, not per message."""

    # (private key type, the suite's opener), in the order the suites were defined
    _suites: ClassVar[list[tuple[type, Callable[..., Opener]]]] = []

    def __init_subclass__(cls, key: type | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if key is not None:
            Opener._suites.append((key, cls))

    def __init__(self, cache: int = 64) -> None:
        self._cache = max(1, cache)
        self._derived: OrderedDict[str, bytes] = OrderedDict()

    @staticmethod
    def for_key(key: EncryptionPrivateKey, cache: int = 64) -> Opener:
        """The opener of the key's suite (X25519 or SM2); TypeError for a key of no suite."""
        for key_type, suite in Opener._suites:
            if isinstance(key, key_type):
                return suite(key, cache)
        raise TypeError(f"no sealing suite for a {type(key).__name__} key")

    def _cached(self, handle: str, derive: Callable[[], bytes]) -> bytes:
        """The key derived for ``handle`` (an ephemeral public key, an encrypted content key), from the cache or
        from ``derive``."""
        derived = self._derived.get(handle)
        if derived is not None:
            self._derived.move_to_end(handle)
            return derived
        derived = derive()
        self._derived[handle] = derived
        if len(self._derived) > self._cache:
            self._derived.popitem(last=False)
        return derived

    @abstractmethod
    def open(self, jwe: str) -> bytes: ...
