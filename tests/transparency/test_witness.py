"""The witness cosigns only checkpoints that extend what it cosigned before (C2SP tlog-witness)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustserve.crypto import merkle
from trustserve.transparency import note
from trustserve.transparency.note import COSIGNATURE_V1, ED25519, Checkpoint, Signer
from trustserve.transparency.witness import Witness, submission

ORIGIN = "kms.test/log"


class Log:
    """A log as the KMS keeps it: leaf hashes and a signing key."""

    def __init__(self, signer: Signer, entries: list[bytes]) -> None:
        self.signer = signer
        self.leaves = [merkle.leaf_hash(e) for e in entries]

    def signed(self, size: int) -> str:
        text = Checkpoint(ORIGIN, size, merkle.root(self.leaves[:size])).text()
        return note.Note(text, (note.sign(text, self.signer),)).render()

    def submit(self, witness: Witness, old: int, size: int) -> tuple[int, str]:
        proof = merkle.consistency_proof(self.leaves[:size], old) if 0 < old < size else []
        answer = witness.add_checkpoint(submission(old, proof, self.signed(size)))
        return answer.status, answer.body


@pytest.fixture
def log_key() -> Signer:
    return Signer(ORIGIN, ED25519, Ed25519PrivateKey.generate())


@pytest.fixture
def witness(tmp_path: Path, log_key: Signer) -> Witness:
    signer = Signer("witness.test/w1", COSIGNATURE_V1, Ed25519PrivateKey.generate())
    return Witness(signer, {ORIGIN: [log_key.verifier]}, tmp_path / "witness.json")


def _entries(n: int) -> list[bytes]:
    return [os.urandom(16) for _ in range(n)]


def test_the_witness_cosigns_a_first_checkpoint_and_then_each_that_extends_it(
    witness: Witness, log_key: Signer
) -> None:
    log = Log(log_key, _entries(9))
    status, body = log.submit(witness, 0, 5)
    assert status == 200
    cosigned = note.parse(log.signed(5) + body)
    assert note.verified_by(cosigned, [witness.signer.verifier]) == [witness.signer.verifier]
    assert log.submit(witness, 5, 9)[0] == 200
    assert witness.latest(ORIGIN) == (9, merkle.root(log.leaves))


def test_a_fork_shown_to_the_witness_is_never_cosigned(witness: Witness, log_key: Signer) -> None:
    """Split view: the log showed one history, then shows another that drops an entry."""
    entries = _entries(7)
    honest = Log(log_key, entries)
    assert honest.submit(witness, 0, 5)[0] == 200
    forked = Log(log_key, [*entries[:2], os.urandom(16), *entries[3:]])
    status, body = forked.submit(witness, 5, 7)
    assert status == 422 and "fork" in body
    same_size = forked.submit(witness, 5, 5)
    assert same_size[0] == 422 and "fork" in same_size[1]
    assert witness.latest(ORIGIN) == (5, merkle.root(honest.leaves[:5]))


def test_a_rollback_is_refused_and_a_stale_old_size_gets_the_latest_size(
    witness: Witness, log_key: Signer, tmp_path: Path
) -> None:
    log = Log(log_key, _entries(8))
    assert log.submit(witness, 0, 8)[0] == 200
    assert log.submit(witness, 8, 5)[0] == 400
    answer = witness.add_checkpoint(submission(3, [], log.signed(8)))
    assert (answer.status, answer.body, answer.content_type) == (409, "8\n", "text/x.tlog.size")
    # The record survives a restart.
    again = Witness(witness.signer, witness.logs, tmp_path / "witness.json")
    assert again.latest(ORIGIN)[0] == 8


def test_unknown_logs_and_bad_signatures_are_refused(witness: Witness, log_key: Signer) -> None:
    impostor = Signer(ORIGIN, ED25519, Ed25519PrivateKey.generate())
    assert Log(impostor, _entries(2)).submit(witness, 0, 2)[0] == 403
    text = Checkpoint("other.test/log", 1, os.urandom(32)).text()
    other = note.Note(text, (note.sign(text, log_key),)).render()
    assert witness.add_checkpoint(submission(0, [], other)).status == 404
    assert witness.add_checkpoint(b"old 0\n\nnot a note").status == 400
    assert witness.latest(ORIGIN) == (0, merkle.EMPTY_ROOT)
