"""The batch-signature hash tree against RFC 9162's recursive definitions (MTH and PATH, section 2.1)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.crypto.hashtree import HASHES, inclusion_root, leaf_hash, tree


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(items: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, written as the RFC writes it (over the raw entries)."""
    if len(items) == 1:
        return _h(b"\x00" + items[0])
    k = 1 << ((len(items) - 1).bit_length() - 1)  # the largest power of two smaller than n
    return _h(b"\x01" + _mth(items[:k]) + _mth(items[k:]))


def _path(m: int, items: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1."""
    if len(items) == 1:
        return []
    k = 1 << ((len(items) - 1).bit_length() - 1)
    if m < k:
        return _path(m, items[:k]) + [_mth(items[k:])]
    return _path(m - k, items[k:]) + [_mth(items[:k])]


ITEMS = [f"envelope {i}".encode() for i in range(70)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 64, 70])
def test_tree_root_and_paths_equal_the_rfc_9162_definitions(n: int) -> None:
    items = ITEMS[:n]
    root, paths = tree("SHA-256", [leaf_hash("SHA-256", x) for x in items])
    assert root == _mth(items)
    assert paths == [_path(m, items) for m in range(n)]


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 70])
def test_every_leaf_proves_its_inclusion(n: int) -> None:
    leaves = [leaf_hash("SHA-256", x) for x in ITEMS[:n]]
    root, paths = tree("SHA-256", leaves)
    for i, leaf in enumerate(leaves):
        assert inclusion_root("SHA-256", leaf, i, n, paths[i]) == root


def test_a_proof_fails_for_another_leaf_index_size_or_path() -> None:
    leaves = [leaf_hash("SHA-256", x) for x in ITEMS[:13]]
    root, paths = tree("SHA-256", leaves)
    assert inclusion_root("SHA-256", leaves[3], 4, 13, paths[3]) != root  # wrong position
    assert inclusion_root("SHA-256", leaves[4], 3, 13, paths[3]) != root  # another leaf
    assert inclusion_root("SHA-256", leaves[3], 3, 13, paths[3][:-1]) != root  # truncated path
    assert inclusion_root("SHA-256", leaves[3], 3, 13, [*paths[3], root]) is None  # too long for the size
    assert inclusion_root("SHA-256", leaves[3], 3, 8, paths[3]) is None  # a smaller tree is shallower
    assert inclusion_root("SHA-256", leaves[12], 12, 16, paths[12]) != root  # 12 is no last leaf of 16
    assert inclusion_root("SHA-256", leaves[3], 13, 13, paths[3]) is None  # index outside the tree
    flipped = bytearray(paths[3][1])
    flipped[0] ^= 1
    assert inclusion_root("SHA-256", leaves[3], 3, 13, [paths[3][0], bytes(flipped), *paths[3][2:]]) != root


def test_a_leaf_cannot_pass_as_an_inner_node() -> None:
    # domain separation: the two children's concatenation, submitted as an entry, does not hash to their parent
    leaves = [leaf_hash("SHA-256", x) for x in ITEMS[:2]]
    root, _ = tree("SHA-256", leaves)
    assert leaf_hash("SHA-256", leaves[0] + leaves[1]) != root


def test_sm3_trees_use_sm3() -> None:
    # GB/T 32905 example 1: SM3("abc")
    assert HASHES["SM3"](b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    leaves = [leaf_hash("SM3", x) for x in ITEMS[:5]]
    root, paths = tree("SM3", leaves)
    assert root != tree("SHA-256", [leaf_hash("SHA-256", x) for x in ITEMS[:5]])[0]
    assert all(inclusion_root("SM3", leaf, i, 5, paths[i]) == root for i, leaf in enumerate(leaves))


def test_an_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        tree("SHA-256", [])
