"""Attack: the operator rolls the KMS state (and its log with it) back to an earlier copy of
the KMS home. The KMS asks its witnesses at start-up; one cosigned a larger log, so it refuses
to start, naming both sizes, unless told it recovered from a rollback on purpose."""

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
