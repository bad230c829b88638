"""A Merkle tree hash as RFC 9162 (section 2.1) defines it, over SHA-256.

Leaves are hashed as ``SHA-256(0x00 || leaf)``, inner nodes as
``SHA-256(0x01 || left || right)``; ``inclusion_path`` is the audit path of
section 2.1.3.1 and ``root_from_path`` the verification of section 2.1.3.2.
A frontend uses it to bind many clients' nonces into one piece of KMS evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The hashes that lead from leaf ``index`` to the root, leaf side first."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_path(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), root(leaves[:k])]


def inclusion_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and every leaf's inclusion path at once (n log n hashes, not n squared)."""
    if len(leaves) == 1:
        return leaf_hash(leaves[0]), [[]]
    if not leaves:
        raise ValueError("no leaves")
    k = _split(len(leaves))
    left, left_paths = inclusion_paths(leaves[:k])
    right, right_paths = inclusion_paths(leaves[k:])
    paths = [[*p, right] for p in left_paths] + [[*p, left] for p in right_paths]
    return node_hash(left, right), paths


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` leads to from ``leaf`` at ``index`` of ``size``; None if the
    path cannot belong to such a tree."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None
