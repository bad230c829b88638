"""Attack: a split view. The operator forks the KMS (a copy of its home: same identity, same
log so far) and logs a permissive release policy only in the fork, to show it to some clients.
The witness has cosigned the genuine log's newer checkpoint; shown the fork's, it refuses to
cosign, so the fork's checkpoint lacks the cosignature every witnessing client demands."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.attacks.tlog_fixtures import (
    cosigners,
    kms_home,
    refused_start,
    start_kms,
    start_witness,
)


def test_a_witness_refuses_the_forked_log_with_a_permissive_policy(tmp_path: Path) -> None:
    home, key, log_key = kms_home(tmp_path)
    witness = start_witness(tmp_path, "witness.test/w1", log_key)
    genuine = fork = None
    try:
        genuine = start_kms(home, key, "--witness", witness.option)
        genuine.stop()
        fork_home = tmp_path / "fork" / "home"
        shutil.copytree(home, fork_home)  # the same identity and log, from here on two
        genuine = start_kms(home, key, "--witness", witness.option)
        genuine.rotate()
        assert cosigners(genuine.checkpoint(), [witness.verifier], log_key) == ["witness.test/w1"]

        # the fork is behind the witness: it refuses to start as it is ...
        assert "cosigned" in refused_start(
            fork_home, key, "--witness", witness.option, "--allow-sim-any"
        )
        # ... and an operator who forces it gets no cosignature for the permissive policy
        fork = start_kms(
            fork_home, key, "--witness", witness.option, "--allow-sim-any",
            "--recovered-from-rollback",
        )  # fmt: skip
        entries = fork.get("/v1/log/entries?start=0&end=3").json()["entries"]
        assert entries[-1]["entry"]["kind"] == "release-policy"
        assert entries[-1]["entry"]["policy"] != entries[1]["entry"]["policy"]
        assert cosigners(fork.checkpoint(), [witness.verifier], log_key) == []
        # the genuine log still is what the witness vouches for
        assert cosigners(genuine.checkpoint(), [witness.verifier], log_key) == ["witness.test/w1"]
    finally:
        for kms in (genuine, fork):
            if kms is not None and kms.proc.poll() is None:
                kms.stop()
        witness.stop()
