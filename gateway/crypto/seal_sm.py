"""Sealed payloads in the national suite: SM2 key transport and SM4-GCM content encryption.

The same compact JWE shape as seal.py (RFC 7516 section 7.1: header.encrypted_key.iv.ciphertext.tag), with the
protected header ``{"alg": "SM2", "enc": "SM4GCM", "kid": <recipient>}``. "SM2" and "SM4GCM" are private-use
names (RFC 7516 section 4.1.1-4.1.2), not registered in the IANA JOSE registry, so only yrdx gateways open these:

- ``alg`` SM2: the encrypted key is the 16-byte content key encrypted to the recipient gateway's SM2 key
  (GB/T 32918.4, ``C1 || C3 || C2``, :func:`gateway.crypto.sm2.sm2_encrypt`);
- ``enc`` SM4GCM: SM4 (GB/T 32907) in GCM with a 96-bit IV and a 128-bit tag, the additional authenticated data
  being the ASCII of the base64url protected header, as RFC 7516 section 5.1 step 14 prescribes.

SM2 encryption is slow here (pure-Python point multiplication, ~7 ms; decryption the same), so like seal.py,
which reuses its ephemeral key agreement, the sealer reuses one content key per recipient for up to a minute
and 10,000 messages, and the opener caches content keys by encrypted key. Each message still gets a fresh random
IV: with at most 10,000 messages per key the chance of an IV repeating is below 2^-70, far inside the 2^-32 bound
NIST SP 800-38D sets for random IVs under one GCM key.
"""

from __future__ import annotations

import functools
import os
from typing import Final

import orjson
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.crypto.jws import b64url_decode, b64url_encode
from gateway.crypto.seal_base import Opener, Sealer, SealError
from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey, sm2_decrypt, sm2_encrypt

__all__ = ["ALG", "ENC", "SmOpener", "SmSealer"]

ALG: Final = "SM2"
ENC: Final = "SM4GCM"
_KEY_BYTES: Final = 16
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16


@functools.cache
def _require_sm4_gcm() -> None:
    """SM4-GCM depends on the OpenSSL build behind cryptography: fail at start-up, not per message."""
    try:
        encryptor = Cipher(algorithms.SM4(bytes(_KEY_BYTES)), modes.GCM(bytes(_IV_BYTES))).encryptor()
        encryptor.update(b"probe")
        encryptor.finalize()
    except UnsupportedAlgorithm as e:
        raise RuntimeError(f"SM4-GCM is not available in this cryptography/OpenSSL build: {e}") from e


class SmSealer(Sealer, key=Sm2PublicKey):
    """Seals for one recipient gateway with its SM2 key: one SM2-encrypted content key per rotation period,
    a fresh IV per message."""

    def __init__(
        self, recipient: Sm2PublicKey, kid: str, rotate_s: float = 60.0, rotate_uses: int = 10_000
    ) -> None:
        if not isinstance(recipient, Sm2PublicKey):
            raise TypeError(f"SmSealer needs an SM2 public key, not {type(recipient).__name__}")
        _require_sm4_gcm()
        super().__init__(kid, rotate_s, rotate_uses)
        self._recipient = recipient
        self._header_b64 = b64url_encode(orjson.dumps({"alg": ALG, "enc": ENC, "kid": kid}))
        self._aad = self._header_b64.encode("ascii")
        self._cek = b""
        self._encrypted_key_b64 = ""

    def _renew(self) -> None:
        self._cek = os.urandom(_KEY_BYTES)
        self._encrypted_key_b64 = b64url_encode(sm2_encrypt(self._recipient, self._cek))

    def _seal(self, plaintext: bytes) -> str:
        iv = os.urandom(_IV_BYTES)
        encryptor = Cipher(algorithms.SM4(self._cek), modes.GCM(iv)).encryptor()
        encryptor.authenticate_additional_data(self._aad)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ".".join((self._header_b64, self._encrypted_key_b64, b64url_encode(iv), b64url_encode(ciphertext),
                         b64url_encode(encryptor.tag)))


class SmOpener(Opener, key=Sm2PrivateKey):
    """Opens what was sealed for this gateway's SM2 key. Content keys are cached by encrypted key, so the costly
    SM2 decryption runs once per sender content key (about once a minute per peer), not per message."""

    def __init__(self, key: Sm2PrivateKey, cache: int = 64) -> None:
        if not isinstance(key, Sm2PrivateKey):
            raise TypeError(f"SmOpener needs an SM2 private key, not {type(key).__name__}")
        _require_sm4_gcm()
        super().__init__(cache)
        self._key = key

    def _content_key(self, encrypted_key_b64: str) -> bytes:
        cek = sm2_decrypt(self._key, b64url_decode(encrypted_key_b64))  # Sm2Error (a ValueError) if it fails
        if len(cek) != _KEY_BYTES:
            raise SealError(f"the content key is {len(cek)} bytes, not {_KEY_BYTES}")
        return cek

    def open(self, jwe: str) -> bytes:
        parts = jwe.split(".")
        if len(parts) != 5:
            raise SealError("not a compact JWE (five parts)")
        header_b64, encrypted_key_b64, iv_b64, ciphertext_b64, tag_b64 = parts
        try:
            header = orjson.loads(b64url_decode(header_b64))
            if not isinstance(header, dict) or header.get("alg") != ALG or header.get("enc") != ENC:
                alg, enc = (header.get("alg"), header.get("enc")) if isinstance(header, dict) else (None, None)
                raise SealError(f"unsupported alg/enc {alg}/{enc}")
            iv, ciphertext, tag = b64url_decode(iv_b64), b64url_decode(ciphertext_b64), b64url_decode(tag_b64)
            if len(iv) != _IV_BYTES or len(tag) != _TAG_BYTES:
                raise SealError(f"an {ENC} IV is {_IV_BYTES} bytes and its tag {_TAG_BYTES}")
            cek = self._cached(encrypted_key_b64, lambda: self._content_key(encrypted_key_b64))
            decryptor = Cipher(algorithms.SM4(cek), modes.GCM(iv, tag)).decryptor()
            decryptor.authenticate_additional_data(header_b64.encode("ascii"))
            return decryptor.update(ciphertext) + decryptor.finalize()
        except SealError:
            raise
        except InvalidTag as e:
            raise SealError("does not open with this gateway's key, or was tampered with") from e
        except (ValueError, TypeError, orjson.JSONDecodeError) as e:  # Sm2Error is a ValueError
            raise SealError(f"does not open with this gateway's key, or is malformed: {e}") from e
