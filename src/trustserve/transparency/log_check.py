"""Checking a whole log as a monitor does: the checkpoint's signatures, the entries against
the roots the checkpoints commit to, and where an edited log first differs.

``open_checkpoint`` checks a signed note with the log's key (and, if given, a quorum of
witnesses). ``first_difference`` finds the first entry that is not what a checkpoint commits
to. A root alone cannot say which leaf differs, so it asks the log for consistency proofs
from prefixes of the entries to the checkpoint: the longest prefix ``m`` whose recomputed root
the checkpoint provably extends is good, so entry ``m`` is the first bad one (binary search:
log2(n) proofs). A log that answers with proofs of its own edited tree proves no prefix; the
index named is then the first the log could not prove, which is never after the first edit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trustserve.crypto import merkle
from trustserve.errors import TransparencyRefused, TrustserveError
from trustserve.transparency import note
from trustserve.transparency.entries import encode
from trustserve.transparency.note import Checkpoint, Verifier
from trustserve.transparency.witness_policy import WitnessPolicy

Consistency = Callable[[int, int], Sequence[bytes]]


class NotCosigned(TransparencyRefused):
    """A checkpoint signed by the log but not (yet) by a quorum of the named witnesses."""


def open_checkpoint(
    signed: str, log_key: Verifier, witnesses: WitnessPolicy | None = None
) -> Checkpoint:
    """The checkpoint of ``signed`` if the log's key signed it (and a quorum cosigned it)."""
    parsed = note.parse(signed)
    checkpoint = Checkpoint.from_text(parsed.text)
    if checkpoint.origin != log_key.name:
        raise TransparencyRefused(
            f"the checkpoint is of log {checkpoint.origin[:80]!r}, not {log_key.name}"
        )
    if not note.verified_by(parsed, [log_key]):
        raise TransparencyRefused(f"the checkpoint is not signed by the key of {log_key.name}")
    if witnesses is not None:
        cosigned, _ = witnesses.cosigners(parsed)
        if len(cosigned) < witnesses.quorum:
            raise NotCosigned(
                f"{len(cosigned)} of the named witnesses cosigned the checkpoint of size "
                f"{checkpoint.size}; {witnesses.quorum} are required"
            )
    return checkpoint


def leaves_of(entries: Sequence[dict[str, Any]]) -> list[bytes]:
    return [merkle.leaf_hash(encode(e)) for e in entries]


def first_difference(
    leaves: Sequence[bytes], reference: Checkpoint, consistency: Consistency
) -> int | None:
    """The index of the first leaf that is not what ``reference`` commits to (None if the
    first ``reference.size`` leaves are exactly its tree)."""
    n = reference.size
    if len(leaves) < n:
        raise ValueError(f"{len(leaves)} leaves for a checkpoint of size {n}")
    if merkle.root(leaves[:n]) == reference.root:
        return None

    def proven(m: int) -> bool:  # the first m leaves are a prefix of the reference tree
        try:
            proof = consistency(m, n)
            merkle.verify_consistency(m, n, merkle.root(leaves[:m]), reference.root, proof)
        except TrustserveError:
            return False
        return True

    good, bad = 0, n  # the empty prefix is in every tree; all n leaves are not
    while bad - good > 1:
        middle = (good + bad) // 2
        if proven(middle):
            good = middle
        else:
            bad = middle
    return good
