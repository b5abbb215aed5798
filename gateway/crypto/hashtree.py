"""Merkle hash trees for batch signatures (RFC 9162 section 2.1: the Certificate Transparency tree).

A gateway that signs a batch of envelopes signs one tree root instead of every envelope; each envelope then
travels with its inclusion proof (its leaf index and the sibling hashes up to the root). The tree shape, the
domain separation (``0x00`` before a leaf, ``0x01`` before two children) and the proof check are exactly those of
RFC 9162, so any Certificate Transparency library can check a proof too.

The hash is SHA-256, or SM3 for the national suite; both have 32-byte digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from cryptography.hazmat.primitives import hashes

__all__ = ["HASHES", "DIGEST_SIZE", "inclusion_root", "leaf_hash", "tree"]

DIGEST_SIZE: Final = 32


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


HASHES: Final[dict[str, Callable[[bytes], bytes]]] = {"SHA-256": _sha256, "SM3": _sm3}


def leaf_hash(hash_name: str, data: bytes) -> bytes:
    return HASHES[hash_name](b"\x00" + data)


def tree(hash_name: str, leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """(root, inclusion path of each leaf) of the tree over ``leaves`` (already leaf-hashed).

    Built level by level: pairs are hashed, and an unpaired last node moves up unchanged. That gives the same
    left-balanced tree as RFC 9162's recursive split at the largest power of two below the size.
    """
    if not leaves:
        raise ValueError("a tree needs at least one leaf")
    h = HASHES[hash_name]
    paths: list[list[bytes]] = [[] for _ in leaves]
    # members[i] holds the leaf indexes under node i of the current level
    level, members = list(leaves), [[i] for i in range(len(leaves))]
    while len(level) > 1:
        next_level, next_members = [], []
        for i in range(0, len(level) - 1, 2):
            left, right = level[i], level[i + 1]
            for leaf in members[i]:
                paths[leaf].append(right)
            for leaf in members[i + 1]:
                paths[leaf].append(left)
            next_level.append(h(b"\x01" + left + right))
            next_members.append(members[i] + members[i + 1])
        if len(level) % 2:
            next_level.append(level[-1])
            next_members.append(members[-1])
        level, members = next_level, next_members
    return level[0], paths


def inclusion_root(hash_name: str, leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves ``leaf`` (at ``index`` in a tree of ``size`` leaves) to be under, or None
    if the path cannot belong to such a tree (RFC 9162 section 2.1.3.2). The caller compares the result with
    the signed root."""
    if not 0 <= index < size:
        return None
    h = HASHES[hash_name]
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = h(b"\x01" + p + r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = h(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
