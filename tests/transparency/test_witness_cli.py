"""``trustserve witness init`` and ``serve`` as an operator runs them: real processes, real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support import free_port
from trustserve.crypto import merkle
from trustserve.transparency import note
from trustserve.transparency.note import ED25519, Checkpoint, Signer, Verifier
from trustserve.transparency.witness import submission

CLI = [sys.executable, "-m", "trustserve.cli"]
LOG = Signer("kms.test/log", ED25519, Ed25519PrivateKey.generate())


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[tuple[str, Verifier]]:
    key = tmp_path / "witness.key"
    made = subprocess.run(
        [*CLI, "witness", "init", "--key", str(key), "--name", "witness.test/w1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert key.stat().st_mode & 0o777 == 0o600
    port = free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "witness",
            "serve",
            "--key",
            str(key),
            "--log",
            LOG.verifier.vkey(),
            "--state",
            str(tmp_path / "state.json"),
            "--port",
            str(port),
        ],
    )
    url = f"http://127.0.0.1:{port}/add-checkpoint"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.post(url, content=b"", timeout=5)
            break
        except httpx.TransportError:
            assert proc.poll() is None, "the witness exited"
            assert time.monotonic() < deadline, "the witness did not listen"
            time.sleep(0.2)
    yield url, Verifier.from_vkey(made.stdout.strip())
    proc.terminate()
    proc.wait(timeout=30)


def _signed(leaves: list[bytes]) -> str:
    text = Checkpoint(LOG.name, len(leaves), merkle.root(leaves)).text()
    return note.Note(text, (note.sign(text, LOG),)).render()


def test_a_running_witness_cosigns_the_log_and_refuses_a_fork(
    witness: tuple[str, Verifier],
) -> None:
    url, key = witness
    leaves = [merkle.leaf_hash(os.urandom(8)) for _ in range(6)]
    first = httpx.post(url, content=submission(0, [], _signed(leaves[:4])))
    assert first.status_code == 200
    assert note.verified_by(note.parse(_signed(leaves[:4]) + first.text), [key]) == [key]
    forked = [*leaves[:3], merkle.leaf_hash(b"other"), *leaves[4:]]
    fork = httpx.post(
        url, content=submission(4, merkle.consistency_proof(forked, 4), _signed(forked))
    )
    assert fork.status_code == 422, fork.text
    grown = httpx.post(
        url, content=submission(4, merkle.consistency_proof(leaves, 4), _signed(leaves))
    )
    assert grown.status_code == 200


def test_witness_serve_refuses_an_oversized_body(witness: tuple[str, Verifier]) -> None:
    url, _ = witness
    assert httpx.post(url, content=b"x" * 20000).status_code == 413
