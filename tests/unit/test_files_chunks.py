"""Chunk sealing (gateway/files/chunks.py): each chunk opens only as itself, in either suite."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes

from gateway.files.chunks import ChunkCipher, ChunkError, new_digest

FILE_ID = "01936f0e-3c1a-7cc2-9a4b-5d2e8f1a6b3c"
OTHER_FILE = "01936f0e-3c1a-7cc2-9a4b-5d2e8f1a6b3d"


@pytest.mark.parametrize("alg", ["SHA-256", "SM3"])
def test_a_sealed_chunk_opens_as_itself(alg: str) -> None:
    cipher = ChunkCipher(alg, FILE_ID)
    data = os.urandom(1000)
    sealed = cipher.seal(3, data)
    assert data not in sealed and len(sealed) == len(data) + 16
    assert ChunkCipher(alg, FILE_ID, cipher.key).open(3, sealed) == data


@pytest.mark.parametrize("alg", ["SHA-256", "SM3"])
def test_a_flipped_byte_does_not_open(alg: str) -> None:
    cipher = ChunkCipher(alg, FILE_ID)
    sealed = bytearray(cipher.seal(0, b"320506199007181520" * 10))
    sealed[7] ^= 0x01
    with pytest.raises(ChunkError, match="chunk 0 does not open"):
        cipher.open(0, bytes(sealed))


@pytest.mark.parametrize("alg", ["SHA-256", "SM3"])
def test_a_chunk_moved_to_another_index_or_file_does_not_open(alg: str) -> None:
    cipher = ChunkCipher(alg, FILE_ID)
    sealed = cipher.seal(1, b"materials")
    with pytest.raises(ChunkError):
        cipher.open(2, sealed)
    with pytest.raises(ChunkError):
        ChunkCipher(alg, OTHER_FILE, cipher.key).open(1, sealed)
    with pytest.raises(ChunkError):
        ChunkCipher(alg, FILE_ID).open(1, sealed)  # another file key


def test_each_suite_has_its_own_key_size_and_refuses_the_other() -> None:
    assert len(ChunkCipher("SHA-256", FILE_ID).key) == 32  # AES-256-GCM
    assert len(ChunkCipher("SM3", FILE_ID).key) == 16  # SM4-GCM
    with pytest.raises(ChunkError):
        ChunkCipher("SM3", FILE_ID, os.urandom(32))
    with pytest.raises(ValueError, match="unsupported"):
        ChunkCipher("MD5", FILE_ID)


def test_streaming_digests_match_the_one_shot_ones() -> None:
    data = os.urandom(70_000)
    sha = new_digest("SHA-256")
    sm3 = new_digest("SM3")
    for i in range(0, len(data), 7_001):
        sha.update(data[i:i + 7_001])
        sm3.update(data[i:i + 7_001])
    one_shot = hashes.Hash(hashes.SM3())
    one_shot.update(data)
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sm3.hexdigest() == sm3.hexdigest() == one_shot.finalize().hex()  # asking twice gives the same
