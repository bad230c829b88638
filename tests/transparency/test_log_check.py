"""Where an edited log first differs from what a checkpoint commits to (``first_difference``)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from trustserve.crypto import merkle
from trustserve.transparency.log_check import first_difference
from trustserve.transparency.note import Checkpoint


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(os.urandom(8)) for _ in range(n)]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_the_first_edited_entry_is_named_wherever_the_edits_are(
    n: int, data: st.DataObject
) -> None:
    original = _leaves(n)
    edits = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1), min_size=1, max_size=4))
    edited = [merkle.leaf_hash(os.urandom(8)) if i in edits else h for i, h in enumerate(original)]
    reference = Checkpoint("kms.test/log", n, merkle.root(original))

    def proofs(old: int, new: int) -> list[bytes]:  # the log's hashes kept apart, unedited
        return merkle.consistency_proof(original[:new], old)

    assert first_difference(edited, reference, proofs) == min(edits)
    assert first_difference(original, reference, proofs) is None


def test_a_log_whose_proofs_are_of_its_edited_tree_is_never_named_after_the_first_edit() -> None:
    original = _leaves(20)
    edited = list(original)
    edited[11] = merkle.leaf_hash(b"edited")
    reference = Checkpoint("kms.test/log", 20, merkle.root(original))

    def proofs(old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(edited[:new], old)

    found = first_difference(edited, reference, proofs)
    assert found is not None and found <= 11
