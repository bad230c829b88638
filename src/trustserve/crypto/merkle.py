"""The Merkle tree of RFC 9162 §2.1 (the tree of Certificate Transparency, RFC 6962).

Leaves are hashed as ``SHA-256(0x00 || entry)``, interior nodes as
``SHA-256(0x01 || left || right)``; a tree of ``n`` leaves splits at the largest power of two
below ``n``. ``inclusion_proof``/``consistency_proof`` build the audit paths of §2.1.3.1 and
§2.1.4.1 from the leaf hashes; ``verify_inclusion``/``verify_consistency`` are the checks of
§2.1.3.2 and §2.1.4.2, which is all a client, a witness or a monitor runs. Every failure of a
check is a ``ProofError`` that says which check failed; nothing here trusts its inputs.

SHA-256 comes from hashlib; only the tree shape is written here, as the RFC specifies it.
Tested against the published vectors of transparency-dev/merkle and a property test of random
trees (tests/transparency); the transparency log, its witnesses and the frontend's batches of
clients' nonces (one piece of KMS evidence for many clients) all use this one module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from trustserve.errors import TransparencyRefused

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(TransparencyRefused):
    """A Merkle proof that does not hold (names which check failed)."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes ``leaves`` (RFC 9162 §2.1.1)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the leaf hashes ``leaves`` and every leaf's audit path at once
    (n log n hashes, not n squared): a frontend binds many clients' nonces this way."""
    if not leaves:
        raise ValueError("a tree of no leaves has no audit paths")
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = _split(len(leaves))
    left, left_paths = inclusion_proofs(leaves[:k])
    right, right_paths = inclusion_proofs(leaves[k:])
    paths = [[*p, right] for p in left_paths] + [[*p, left] for p in right_paths]
    return node_hash(left, right), paths


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (§2.1.3.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), root(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the first ``old_size`` leaves are a prefix of ``leaves`` (§2.1.4.1)."""
    if not 0 < old_size <= len(leaves):
        raise ValueError(f"no consistency proof from {old_size} to {len(leaves)}")
    return _subproof(old_size, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not a {HASH_SIZE}-byte SHA-256 hash")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Check that leaf hash ``leaf`` is entry ``index`` of tree ``size`` / ``expected_root``."""
    _check_hash(leaf, "the leaf hash")
    _check_hash(expected_root, "the root hash")
    for step in proof:
        _check_hash(step, "a proof step")
    if not 0 <= index < size:
        raise ProofError(f"entry {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for step in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(step, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, step)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    if r != expected_root:
        raise ProofError(f"entry {index} is not in the tree of size {size} with that root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``old_size``/``old_root`` is a prefix of ``new_size``/``new_root``."""
    if old_size > new_size:
        raise ProofError(f"the tree shrank from {old_size} to {new_size} entries (a rollback)")
    if old_size == 0:
        raise ProofError("no consistency proof is taken from an empty tree")
    if old_size == new_size:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old_size} (a fork)")
        return
    _check_hash(old_root, "the old root hash")
    _check_hash(new_root, "the new root hash")
    for step in proof:
        _check_hash(step, "a proof step")
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for step in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(step, fr)
            sr = node_hash(step, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, step)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError(f"the tree of size {new_size} does not extend the old root (a fork)")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {new_size}")
