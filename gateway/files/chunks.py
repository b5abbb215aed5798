"""A file's bytes as sealed chunks: one content key per file, each chunk AEAD-sealed with its index bound in.

The suite follows the destination's sealing suite, named by the file's digest algorithm: SHA-256 files are
sealed with AES-256-GCM, SM3 files (the national suite) with SM4-GCM. The file key is random per file and
travels only inside the sealed manifest (manifest.py), so the chunks need no public-key step of their own. Each
chunk's nonce is its index (a key never seals two chunks under one nonce, since the key seals one file) and its
associated data names the file id and the index, so a chunk moved to another place or another file does not
open; a missing or repeated chunk is found by its index, and a truncated file by the manifest's chunk count.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CHUNK_BYTES", "DIGEST_ALGS", "TAG_BYTES", "ChunkCipher", "ChunkError", "Digest", "new_digest"]

CHUNK_BYTES: Final = 512 * 1024  # plaintext per chunk: one Kafka record well below the broker's 1 MiB
TAG_BYTES: Final = 16
DIGEST_ALGS: Final = ("SHA-256", "SM3")
_KEY_BYTES: Final = {"SHA-256": 32, "SM3": 16}  # AES-256-GCM, SM4-GCM
_AAD_PREFIX: Final = b"yrdx-file-chunk\x00"


class ChunkError(ValueError):
    """A chunk that does not open: tampered with, moved, of another file, or sealed with another key."""


class Digest(Protocol):
    """What the sender and the store need of a streaming digest (hashlib's shape)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class _Sm3:
    """SM3 with hashlib's update/hexdigest shape."""

    def __init__(self) -> None:
        self._h = hashes.Hash(hashes.SM3())

    def update(self, data: bytes, /) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.copy().finalize().hex()  # as hashlib: the digest so far, and it may go on


def new_digest(alg: str) -> Digest:
    """A streaming digest of ``alg`` (SHA-256 or SM3); ValueError for another."""
    if alg == "SHA-256":
        return hashlib.sha256()
    if alg == "SM3":
        return _Sm3()
    raise ValueError(f"unsupported digest {alg!r}")


def _aad(file_id: str, index: int) -> bytes:
    return _AAD_PREFIX + file_id.encode("ascii") + b"\x00" + index.to_bytes(8, "big")


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


class ChunkCipher:
    """Seals and opens the chunks of one file with its key, in the suite of its digest algorithm."""

    def __init__(self, digest_alg: str, file_id: str, key: bytes | None = None) -> None:
        if digest_alg not in _KEY_BYTES:
            raise ValueError(f"unsupported digest {digest_alg!r}")
        self.digest_alg = digest_alg
        self.file_id = file_id
        self.key = key if key is not None else os.urandom(_KEY_BYTES[digest_alg])
        if len(self.key) != _KEY_BYTES[digest_alg]:
            raise ChunkError(f"a {digest_alg} file key is {_KEY_BYTES[digest_alg]} bytes, not {len(self.key)}")
        self._aes = AESGCM(self.key) if digest_alg == "SHA-256" else None

    def seal(self, index: int, plaintext: bytes) -> bytes:
        """``ciphertext || tag`` of chunk ``index``."""
        if self._aes is not None:
            return self._aes.encrypt(_nonce(index), plaintext, _aad(self.file_id, index))
        encryptor = Cipher(algorithms.SM4(self.key), modes.GCM(_nonce(index))).encryptor()
        encryptor.authenticate_additional_data(_aad(self.file_id, index))
        return encryptor.update(plaintext) + encryptor.finalize() + encryptor.tag

    def open(self, index: int, sealed: bytes) -> bytes:
        """The plaintext of chunk ``index``; ChunkError if it does not open as that chunk of this file."""
        if len(sealed) < TAG_BYTES:
            raise ChunkError(f"chunk {index} is shorter than its tag")
        try:
            if self._aes is not None:
                return self._aes.decrypt(_nonce(index), sealed, _aad(self.file_id, index))
            decryptor = Cipher(algorithms.SM4(self.key), modes.GCM(_nonce(index), sealed[-TAG_BYTES:])).decryptor()
            decryptor.authenticate_additional_data(_aad(self.file_id, index))
            return decryptor.update(sealed[:-TAG_BYTES]) + decryptor.finalize()
        except InvalidTag as e:
            raise ChunkError(f"chunk {index} does not open: tampered with, or not this file's") from e
