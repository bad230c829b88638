"""`trustserve predict` from the command line, against a real stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests.sealed.test_sealed_e2e import requests_seen
from tests.support import RunningStack, png
from trustserve.attestation import Policy


def predict(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "trustserve.cli",
            "predict",
            stack.url,
            *args,
            "--ca",
            str(stack.ca),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TRUSTSERVE_HOME": str(stack.home), "PATH": "/usr/bin:/bin"},
    )


def test_sealed_and_standard_give_the_same_top_k(tiny_stack: RunningStack, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(png((240, 20, 20)))
    sealed = predict(tiny_stack, "colour", str(image), "--allow-simulated")
    standard = predict(tiny_stack, "colour", str(image), "--standard")
    assert sealed.returncode == 0, sealed.stderr
    assert "SIMULATED" in sealed.stderr
    assert "sealing for colour version 1" in sealed.stderr
    assert json.loads(sealed.stdout) == json.loads(standard.stdout)
    assert next(iter(json.loads(sealed.stdout))) == "red"


def test_npy_input_prints_outputs(tiny_stack: RunningStack, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1, 2, 3, 4]], np.float32))
    out = predict(tiny_stack, "tiny", str(x), "--allow-simulated")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"y": [[3.0, 5.0, 7.0, 9.0]], "s": [[10.0]]}


def test_without_a_policy_that_admits_the_server_nothing_is_sent(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 4), np.float32))
    before = requests_seen(tiny_stack)
    out = predict(tiny_stack, "tiny", str(x))
    assert out.returncode == 2
    assert "refused by rule tee" in out.stderr and "allow_simulated" in out.stderr
    assert "add --allow-simulated to accept it" in out.stderr  # the way out, named
    assert "nothing was sent" in out.stderr
    assert requests_seen(tiny_stack) == before


def test_trusting_the_kms_is_not_enough_if_it_releases_keys_to_simulated_workers(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    """The KMS's own (sim) evidence is accepted by ``--policy``; its release policy is not."""
    policy = tmp_path / "kms-policy.yaml"
    policy.write_text(yaml.safe_dump(Policy.development(tiny_stack.home).to_json()))
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 4), np.float32))
    before = requests_seen(tiny_stack)
    out = predict(tiny_stack, "tiny", str(x), "--policy", str(policy))
    assert out.returncode == 2, out.stdout
    assert "refused by rule release_policy.allow_simulated" in out.stderr
    assert requests_seen(tiny_stack) == before
