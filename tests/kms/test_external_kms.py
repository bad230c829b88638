"""``serve --kms URL`` against a separately run ``trustserve kms serve`` (not the dev stack).

The frontend and workers are told which KMS identity to trust; without that they
refuse to start. Attestation is simulated (no TEE hardware here): the KMS's
release policy admits the sim platform key of the serving host's home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, start_stack, wait_http, write_tiny
from trustserve.attestation import Policy
from trustserve.crypto.rootkey import KEY_FILE_ENV, KeyFileProtector, create_key_file
from trustserve.encoding import b64
from trustserve.kms.service import KmsService
from trustserve.kms.tools import encrypt_model_file


@dataclass
class ExternalKms:
    url: str
    ca: Path
    identity: str
    bundle_policy: Path  # what a requester verifying the KMS's bundle accepts


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[ExternalKms]:
    home, key = tmp_path / "kms-home", tmp_path / "kms.key"
    create_key_file(key)
    owner = KmsService(home, KeyFileProtector(key), Policy.default())
    store = tmp_path / "store"
    encrypt_model_file(write_tiny(store), store / "tiny-1.tsm", owner)
    identity = b64(owner.state.identity_key().public_key().public_bytes_raw())
    policy = tmp_path / "release-policy.yaml"  # admits the serving host's sim platform only
    policy.write_text(json.dumps(Policy.development(tmp_path / "home").to_json()))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "kms", "serve", "--home", str(home),
         "--port", str(port), "--policy", str(policy), "--provider", "sim"],
        env={**os.environ, KEY_FILE_ENV: str(key)},
    )  # fmt: skip
    url, ca = f"https://127.0.0.1:{port}", home / "tls" / "ca.pem"
    wait_http(f"{url}/healthz", ca, proc, timeout=60)
    bundle_policy = tmp_path / "kms-bundle-policy.yaml"  # the KMS host's sim platform only
    bundle_policy.write_text(json.dumps(Policy.development(home).to_json()))
    yield ExternalKms(url, ca, identity, bundle_policy)
    proc.terminate()
    proc.wait(20)


@pytest.mark.parametrize("how", ["pinned", "attested"])
def test_serve_trusting_the_kms_serves_the_encrypted_model(
    kms: ExternalKms, tmp_path: Path, how: str
) -> None:
    trust = ["--kms", kms.url, "--kms-ca", str(kms.ca)]
    if how == "pinned":
        trust += ["--kms-identity", kms.identity]
    else:
        trust += ["--kms-policy", str(kms.bundle_policy)]
    stack = start_stack(tmp_path / "home", tmp_path / "store", *trust, dev=False)
    try:
        stack.wait_model_ready("tiny")
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        with stack.client() as c:
            r = c.post("/v2/models/tiny/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [3.0] * 4
    finally:
        stack.stop()


def test_serve_with_a_kms_but_no_trusted_identity_refuses_to_start(
    kms: ExternalKms, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="no trusted KMS identity"):
        start_stack(
            tmp_path / "home", tmp_path / "store", "--kms", kms.url, "--kms-ca", str(kms.ca),
            dev=False, ready_timeout=60,
        )  # fmt: skip
