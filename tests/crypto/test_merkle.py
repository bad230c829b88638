"""The RFC 9162 tree hash and inclusion proofs the frontend's nonce batches use."""

from __future__ import annotations

import hashlib
import random

import pytest

from trustserve.crypto.merkle import (
    inclusion_path,
    inclusion_paths,
    leaf_hash,
    node_hash,
    root,
    root_from_path,
)


def test_leaf_and_node_hashes_are_domain_separated_as_rfc_9162_says() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert a == hashlib.sha256(b"\x00a").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert root([b"a", b"b", b"c"]) == node_hash(node_hash(a, b), leaf_hash(b"c"))
    assert root([b""]).hex().startswith("6e340b9cffb37a98")  # RFC 6962's empty-leaf hash


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100])
def test_every_leafs_path_leads_to_the_root_and_only_from_its_place(size: int) -> None:
    rng = random.Random(size)
    leaves = [rng.randbytes(32) for _ in range(size)]
    top, paths = inclusion_paths(leaves)
    assert top == root(leaves)
    for i, path in enumerate(paths):
        assert path == inclusion_path(i, leaves)
        assert root_from_path(leaves[i], i, size, path) == top
        assert root_from_path(rng.randbytes(32), i, size, path) != top
        if size > 1:
            assert root_from_path(leaves[i], (i + 1) % size, size, path) != top
            assert root_from_path(leaves[i], i, size, path[:-1]) != top
    assert root_from_path(leaves[0], size, size, paths[0]) is None
