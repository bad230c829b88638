"""Attack: the operator rolls the KMS state (and its log with it) back to an earlier copy of
the KMS home. The KMS asks its witnesses at start-up; one cosigned a larger log, so it refuses
to start, naming both sizes, unless told it recovered from a rollback on purpose."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.attacks.tlog_fixtures import (
    CLI,
    cosigners,
    kms_env,
    kms_home,
    refused_start,
    start_kms,
    start_witness,
)
from trustserve.transparency import note
from trustserve.transparency.note import Checkpoint


def _size(signed: str) -> int:
    return Checkpoint.from_text(note.parse(signed).text).size


def test_a_rolled_back_kms_home_refuses_to_start_against_its_witness(tmp_path: Path) -> None:
    home, key, log_key = kms_home(tmp_path)
    witness = start_witness(tmp_path, "witness.test/w1", log_key)
    try:
        kms = start_kms(home, key, "--witness", witness.option)
        old_size = _size(kms.checkpoint())
        kms.stop()
        snapshot = tmp_path / "snapshot"
        shutil.copytree(home, snapshot)  # the operator's old copy of the KMS home

        kms = start_kms(home, key, "--witness", witness.option)
        kms.rotate()  # the log grows; the witness cosigns the larger checkpoint
        grown = kms.checkpoint()
        assert _size(grown) == old_size + 1
        assert cosigners(grown, [witness.verifier], log_key) == ["witness.test/w1"]
        kms.stop()

        shutil.rmtree(home)
        shutil.copytree(snapshot, home)  # rolled back, files and log together
        stderr = refused_start(home, key, "--witness", witness.option)
        assert f"log size {old_size}" in stderr, stderr
        assert f"witness witness.test/w1 cosigned {old_size + 1}" in stderr, stderr

        # an operator who lost the newest state on purpose can start, and is warned loudly
        kms = start_kms(home, key, "--witness", witness.option, "--recovered-from-rollback")
        try:
            assert _size(kms.checkpoint()) == old_size
        finally:
            kms.stop()
    finally:
        witness.stop()


def test_a_rolled_back_state_regrown_to_the_same_size_is_refused_as_a_fork(
    tmp_path: Path,
) -> None:
    """The operator rolls back, then makes changes offline (no witness asked) until the log
    is as long as the one the witness cosigned: the sizes agree, the roots do not."""
    home, key, log_key = kms_home(tmp_path)
    witness = start_witness(tmp_path, "witness.test/w1", log_key)
    try:
        kms = start_kms(home, key, "--witness", witness.option)
        kms.stop()
        snapshot = tmp_path / "snapshot"
        shutil.copytree(home, snapshot)
        kms = start_kms(home, key, "--witness", witness.option)
        kms.rotate()
        grown = _size(kms.checkpoint())
        kms.stop()

        shutil.rmtree(home)
        shutil.copytree(snapshot, home)
        subprocess.run(
            [*CLI, "kms", "rotate-serving-key", "--home", str(home)],
            env=kms_env(key),
            check=True,
            capture_output=True,
        )  # offline: another serving key, no witness asked
        stderr = refused_start(home, key, "--witness", witness.option)
        assert f"log size {grown}" in stderr, stderr
        assert "refused it as a fork" in stderr, stderr
    finally:
        witness.stop()
