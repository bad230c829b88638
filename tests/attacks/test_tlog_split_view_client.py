"""Attack: a split view, seen from the clients. The operator forks the KMS (a copy of its
home: the same identity and log so far) and runs the fork with a permissive release policy,
to show it to some clients only, while the genuine KMS goes on. Real ``kms serve`` and
``witness serve`` processes; the clients' checks are the SDK's (``verify_bundle``, then
``verify_transparency``) on the bundles those processes serve.

* A client that demands its witness's cosignature refuses the fork's view: the witness,
  which cosigned the genuine log, does not cosign the fork (``transparency.cosignatures``).
* A client that names no witness but saw the genuine view before refuses the fork as a fork
  (``transparency.consistency``: one size, two roots).
* The genuine view passes both.

And a rollback: the KMS home put back to its earlier copy and forced to start (the KMS
itself refuses without ``--recovered-from-rollback``, ``test_tlog_kms_rollback.py``) shows
its older, once-cosigned checkpoint; a client that saw the later one refuses it
(``transparency.rollback``).
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest

from tests.attacks.tlog_fixtures import KmsProcess, kms_home, start_kms, start_witness
from trustserve.attestation import Policy
from trustserve.errors import AttestationRefused
from trustserve.keyrelease.bundle import verify_bundle
from trustserve.transparency.note import Checkpoint
from trustserve.transparency.store import CheckpointStore
from trustserve.transparency.verify import Relied, verify_transparency
from trustserve.transparency.witness_policy import WitnessPolicy


def _client_check(kms: KmsProcess, policy: WitnessPolicy, store: CheckpointStore) -> Checkpoint:
    """What the SDK does with a KMS's bundle (its evidence is sim: any sim key admitted)."""
    bundle = kms.get("/v1/attestation").json()
    checked = verify_bundle(bundle, Policy.development(None), time.time())

    def consistency(old: int, new: int) -> list[bytes]:
        answer = kms.get(f"/v1/log/proof/consistency?old={old}&new={new}").json()
        return [base64.b64decode(p) for p in answer["proof"]]

    relied = Relied(checked.release_policy, checked.keys, checked.models)
    return verify_transparency(
        checked.identity_public_key, bundle["transparency"], policy, store, consistency, relied
    )


def test_clients_refuse_the_fork_s_permissive_view(tmp_path: Path) -> None:
    home, key, log_key = kms_home(tmp_path)
    witness = start_witness(tmp_path, "witness.test/w1", log_key)
    genuine = fork = rolled_back = None
    try:
        genuine = start_kms(home, key, "--witness", witness.option, "--provider", "sim")
        genuine.stop()
        fork_home = tmp_path / "fork" / "home"
        shutil.copytree(home, fork_home)
        old_home = tmp_path / "old" / "home"
        shutil.copytree(home, old_home)
        genuine = start_kms(home, key, "--witness", witness.option, "--provider", "sim")
        genuine.rotate()
        fork = start_kms(
            fork_home, key, "--witness", witness.option, "--provider", "sim",
            "--allow-sim-any", "--recovered-from-rollback",
        )  # fmt: skip

        witnessing = WitnessPolicy((witness.verifier,), 1)
        seen = _client_check(genuine, witnessing, CheckpointStore(tmp_path / "client-a"))
        with pytest.raises(AttestationRefused) as refused:
            _client_check(fork, witnessing, CheckpointStore(tmp_path / "client-b"))
        assert refused.value.claim == "transparency.cosignatures"

        no_witness = WitnessPolicy((), 0)
        earlier = CheckpointStore(tmp_path / "client-c")
        assert _client_check(genuine, no_witness, earlier).size == seen.size
        with pytest.raises(AttestationRefused) as forked:
            _client_check(fork, no_witness, earlier)
        assert forked.value.claim == "transparency.consistency", forked.value
        assert earlier.latest(seen.origin) == seen  # the refused view was not stored

        fork.stop()
        rolled_back = start_kms(
            old_home, key, "--witness", witness.option, "--provider", "sim",
            "--recovered-from-rollback",
        )  # fmt: skip
        with pytest.raises(AttestationRefused) as older:
            _client_check(rolled_back, witnessing, CheckpointStore(tmp_path / "client-a"))
        assert older.value.claim == "transparency.rollback", older.value
    finally:
        for kms in (genuine, fork, rolled_back):
            if kms is not None and kms.proc.poll() is None:
                kms.stop()
        witness.stop()
