"""The RFC 9162 tree against published vectors, and a property test of random trees."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustserve.crypto import merkle
from trustserve.crypto.merkle import ProofError

VECTORS = Path(__file__).parent / "vectors"
ROOTS = json.loads((VECTORS / "roots.json").read_text())
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in ROOTS["leaf_inputs_hex"]]


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert len(files) > 40, f"the {kind} vectors are missing"
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def _b(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.mark.parametrize("size", range(len(ROOTS["root_hashes_hex_by_size"])))
def test_root_of_the_first_n_reference_leaves_is_the_published_root(size: int) -> None:
    assert merkle.root(LEAVES[:size]).hex() == ROOTS["root_hashes_hex_by_size"][size]


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    proof = [_b(p) for p in case["proof"] or []]
    args = (_b(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)
        if case["treeSize"] <= len(LEAVES) and _b(case["leafHash"]) == LEAVES[case["leafIdx"]]:
            built = merkle.inclusion_proof(LEAVES[: case["treeSize"]], case["leafIdx"])
            assert built == proof, "the proof we build differs from the published one"


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    proof = [_b(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], _b(case["root1"]), _b(case["root2"]), proof)
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
        if case["size2"] <= len(LEAVES) and _b(case["root2"]) == merkle.root(
            LEAVES[: case["size2"]]
        ):
            built = merkle.consistency_proof(LEAVES[: case["size2"]], case["size1"])
            assert built == proof, "the proof we build differs from the published one"


_trees = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(entries=_trees, data=st.data())
def test_every_entry_of_a_random_tree_is_proven_and_a_changed_proof_is_refused(
    entries: list[bytes], data: st.DataObject
) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries]
    top = merkle.root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle.inclusion_proof(leaves, index)
    merkle.verify_inclusion(leaves[index], index, len(leaves), proof, top)
    if proof:
        step = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[step] = bytes(
            b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(bad[step])
        )
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, len(leaves), bad, top)
    other = data.draw(st.integers(0, len(leaves)))
    if other != index and other < len(leaves) and leaves[other] != leaves[index]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[other], index, len(leaves), proof, top)


@settings(max_examples=150, deadline=None)
@given(entries=_trees, data=st.data())
def test_every_prefix_of_a_random_tree_is_consistent_and_a_fork_is_refused(
    entries: list[bytes], data: st.DataObject
) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries]
    old = data.draw(st.integers(1, len(leaves)))
    proof = merkle.consistency_proof(leaves, old)
    old_root, new_root = merkle.root(leaves[:old]), merkle.root(leaves)
    merkle.verify_consistency(old, len(leaves), old_root, new_root, proof)
    # A fork: a client holds the old root; the log shows a tree with an earlier entry changed,
    # with that tree's own proof.
    forked = list(leaves)
    changed = data.draw(st.integers(0, old - 1))
    forked[changed] = merkle.leaf_hash(entries[changed] + b"!")
    forked_proof = merkle.consistency_proof(forked, old)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, len(leaves), old_root, merkle.root(forked), forked_proof)
    if old < len(leaves):
        with pytest.raises(ProofError, match="rollback"):
            merkle.verify_consistency(len(leaves), old, new_root, old_root, [])


@settings(max_examples=100, deadline=None)
@given(entries=_trees)
def test_the_batched_audit_paths_a_frontend_hands_out_are_each_leafs_own_proof(
    entries: list[bytes],
) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries]
    top, paths = merkle.inclusion_proofs(leaves)
    assert top == merkle.root(leaves)
    assert paths == [merkle.inclusion_proof(leaves, i) for i in range(len(leaves))]
    for i, path in enumerate(paths):
        merkle.verify_inclusion(leaves[i], i, len(leaves), path, top)
