"""Sealed payloads in the JOSE suite (X25519, AES-GCM), and the module that loads both sealing suites.

A sealed payload is a compact JWE (RFC 7516) encrypted to the destination gateway (README "Sealed payloads").

`alg` ECDH-ES+A256KW over X25519 (RFC 8037), `enc` A256GCM: a fresh random content key per message, wrapped
with a key agreed between an ephemeral key and the recipient's key. The ephemeral key is reused for up to a
minute (and 10,000 messages) per recipient, so the key agreement (an X25519 exchange and the Concat KDF, the
costly part) is paid once per minute, not per message; each message still has its own content key and nonce.
The receiver caches the agreed key per ephemeral key for the same reason. Any JOSE library opens these.

The national suite (SM2 key transport, SM4-GCM) is in seal_sm.py, the bases both suites share in seal_base.py.
Importing this module loads both suites, so :meth:`Sealer.for_key` and :meth:`Opener.for_key` pick either by the
type of the key.
"""

from __future__ import annotations

import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.crypto.jws import b64url_decode, b64url_encode
from gateway.crypto.seal_base import Opener, Sealer, SealError
from gateway.crypto.seal_sm import SmOpener, SmSealer

__all__ = ["ALG", "ENC", "Opener", "SealError", "Sealer", "SmOpener", "SmSealer", "X25519Opener", "X25519Sealer"]

ALG = "ECDH-ES+A256KW"
ENC = "A256GCM"


def _kek(shared: bytes) -> bytes:
    """RFC 7518 section 4.6.2: Concat KDF over the shared secret, for a 256-bit AES key wrap key."""
    alg = ALG.encode()
    other = len(alg).to_bytes(4, "big") + alg + b"\0\0\0\0" + b"\0\0\0\0" + (256).to_bytes(4, "big")
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=other).derive(shared)


class X25519Sealer(Sealer, key=X25519PublicKey):
    """ECDH-ES+A256KW over X25519, A256GCM: a fresh content key per message, wrapped under the key agreed with
    an ephemeral key that lives for the rotation period."""

    def __init__(self, recipient: X25519PublicKey, kid: str, rotate_s: float = 60.0, rotate_uses: int = 10_000) -> None:
        super().__init__(kid, rotate_s, rotate_uses)
        self._recipient = recipient
        self._header_b64 = ""
        self._kek = b""

    def _renew(self) -> None:
        ephemeral = X25519PrivateKey.generate()
        epk = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        header = {"alg": ALG, "enc": ENC, "kid": self._kid,
                  "epk": {"kty": "OKP", "crv": "X25519", "x": b64url_encode(epk)}}
        self._header_b64 = b64url_encode(orjson.dumps(header))
        self._kek = _kek(ephemeral.exchange(self._recipient))

    def _seal(self, plaintext: bytes) -> str:
        cek, iv = os.urandom(32), os.urandom(12)
        sealed = AESGCM(cek).encrypt(iv, plaintext, self._header_b64.encode("ascii"))
        return ".".join((self._header_b64, b64url_encode(aes_key_wrap(self._kek, cek)), b64url_encode(iv),
                         b64url_encode(sealed[:-16]), b64url_encode(sealed[-16:])))


class X25519Opener(Opener, key=X25519PrivateKey):
    def __init__(self, key: X25519PrivateKey, cache: int = 64) -> None:
        super().__init__(cache)
        self._key = key

    def _kek_for(self, x: str) -> bytes:
        return _kek(self._key.exchange(X25519PublicKey.from_public_bytes(b64url_decode(x))))

    def open(self, jwe: str) -> bytes:
        parts = jwe.split(".")
        if len(parts) != 5:
            raise SealError("not a compact JWE (five parts)")
        try:
            header = orjson.loads(b64url_decode(parts[0]))
            wrapped, iv, ciphertext, tag = (b64url_decode(p) for p in parts[1:])
            if header.get("alg") != ALG or header.get("enc") != ENC:
                raise SealError(f"unsupported alg/enc {header.get('alg')}/{header.get('enc')}")
            x = header["epk"]["x"]
            cek = aes_key_unwrap(self._cached(x, lambda: self._kek_for(x)), wrapped)
            return AESGCM(cek).decrypt(iv, ciphertext + tag, parts[0].encode("ascii"))
        except SealError:
            raise
        except (InvalidTag, InvalidUnwrap) as e:
            raise SealError("does not open with this gateway's key, or was tampered with") from e
        except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as e:
            raise SealError(f"malformed sealed payload: {e}") from e

