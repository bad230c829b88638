"""`trustserve predict` checks the real KMS's transparency log before it sends anything.

A development stack's KMS has no witnesses: ``quorum: 0`` checks its signature, the
client's own history and the inclusion proofs; a policy that names a witness is refused by
rule, nothing sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.sealed.test_sealed_e2e import requests_seen
from tests.support import RunningStack
from tests.transparency.tlog_support import new_witness
from trustserve.crypto.sealing import ATTESTATION_PATH

CLI = [sys.executable, "-m", "trustserve.cli"]


def predict(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"TRUSTSERVE_HOME": str(stack.home), "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # this checkout's code, not the venv's install
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [*CLI, "predict", stack.url, *args, "--ca", str(stack.ca)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _logging_kms(stack: RunningStack) -> None:
    bundle = httpx.get(f"{stack.url}{ATTESTATION_PATH}", verify=str(stack.ca), timeout=60).json()
    if "transparency" not in bundle:
        pytest.fail("the stack's KMS serves no transparency field in its bundle")


def _policy(tmp_path: Path, transparency: dict[str, object]) -> Path:
    path = tmp_path / "client.yaml"
    sim = {"allow_simulated": True, "measurements": [{"tee": "sim"}]}
    path.write_text(yaml.safe_dump({**sim, "transparency": transparency}))
    return path


def test_predict_checks_the_kms_log_and_keeps_its_checkpoint(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    _logging_kms(tiny_stack)
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1, 2, 3, 4]], np.float32))
    policy = _policy(tmp_path, {"quorum": 0})
    out = predict(tiny_stack, "tiny", str(x), "--allow-simulated", "--policy", str(policy))
    assert out.returncode == 0, out.stderr
    assert "its log checked at size" in out.stderr
    assert list((tiny_stack.home / "transparency").glob("trustserve-kms_*.checkpoint"))


def test_a_witness_the_kms_has_not_got_is_refused_before_anything_is_sent(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    _logging_kms(tiny_stack)
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1, 2, 3, 4]], np.float32))
    policy = _policy(tmp_path, {"witnesses": [new_witness("witness.test/w1").verifier.vkey()]})
    before = requests_seen(tiny_stack)
    out = predict(tiny_stack, "tiny", str(x), "--allow-simulated", "--policy", str(policy))
    assert out.returncode == 2
    assert "refused by rule transparency.cosignatures" in out.stderr
    assert "nothing was sent" in out.stderr
    assert requests_seen(tiny_stack) == before
