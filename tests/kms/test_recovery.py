"""Owner recovery end to end: every KMS disk and secret lost but the encrypted state.

Three owners, any two of whom rebuild the root key. The original KMS's home and
key file are deleted; only a backup of ``state.json`` (ciphertext) and the recovery
file remain. ``trustserve kms recover`` (its own process, sim evidence: no TEE
hardware here) waits for shares; two owners, each with ``kms recover-share`` in a
process of its own, verify its evidence against their trust policy and send
theirs; it stores the rebuilt key under a new operator secret and exits. The KMS
then started with ``kms serve`` releases the same model key as before to a worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port, tiny_manifest, wait_http
from trustserve import files
from trustserve.attestation import Policy, make_provider
from trustserve.crypto.rootkey import KEY_FILE_ENV, KeyFileProtector, create_key_file
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import model_digest
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.service import KmsService


def _cli(*argv: str | Path, key_file: Path | None = None) -> str:
    env = {**os.environ, **({KEY_FILE_ENV: str(key_file)} if key_file else {})}
    done = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", *map(str, argv)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_of_three_owners_recover_a_kms_whose_disks_and_secret_are_gone(
    tmp_path: Path,
) -> None:
    worker_home = tmp_path / "worker-home"
    owners = [tmp_path / f"owner-{i}" for i in range(3)]
    for owner in owners:
        _cli("kms", "owner-keygen", owner)
        assert (owner / "owner.key").stat().st_mode & 0o077 == 0

    # the original KMS: a model key provisioned, then the root key split 2-of-3
    home, key = tmp_path / "kms-home", tmp_path / "kms.key"
    create_key_file(key)
    original = KmsService(home, KeyFileProtector(key), Policy.development(worker_home))
    manifest = tiny_manifest()
    key_id, data_key = original.provision_model_key(manifest)
    identity = original.state.identity_public_key()
    recovery_file = tmp_path / "recovery.json"
    pubs = [a for o in owners for a in ("--owner", o / "owner.pub")]
    _cli("kms", "recovery-init", "--home", home, *pubs, "--threshold", "2", "-o", recovery_file,
         key_file=key)  # fmt: skip
    assert json.loads(recovery_file.read_text())["threshold"] == 2

    # every disk and the secret are gone; a backup of the encrypted state is not
    backup = (home / "kms" / "state.json").read_bytes()
    shutil.rmtree(home)
    key.unlink()
    new_home, new_key = tmp_path / "new-kms-home", tmp_path / "new-kms.key"
    files.write_secret(new_home / "kms" / "state.json", backup)
    create_key_file(new_key)

    port = free_port()
    recovering = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "kms", "recover", "--home", str(new_home),
         "--recovery-file", str(recovery_file), "--port", str(port), "--provider", "sim"],
        env={**os.environ, KEY_FILE_ENV: str(new_key)},
    )  # fmt: skip
    try:
        url, ca = f"https://127.0.0.1:{port}", new_home / "tls" / "ca.pem"
        wait_http(f"{url}/healthz", ca, recovering, timeout=60)
        trust_policy = tmp_path / "kms-trust-policy.yaml"  # the recovering host's sim key only
        trust_policy.write_text(json.dumps(Policy.development(new_home).to_json()))

        def send(owner: Path) -> str:
            return _cli("kms", "recover-share", url, "--owner-key", owner / "owner.key",
                        "--recovery-file", recovery_file, "--trust-policy", trust_policy,
                        "--ca", ca)  # fmt: skip

        # an owner whose policy does not admit this evidence sends nothing (and says why)
        strict = tmp_path / "strict-policy.yaml"
        strict.write_text(json.dumps(Policy.default().to_json()))
        refused = subprocess.run(
            [sys.executable, "-m", "trustserve.cli", "kms", "recover-share", url,
             "--owner-key", str(owners[1] / "owner.key"), "--recovery-file", str(recovery_file),
             "--trust-policy", str(strict), "--ca", str(ca)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "share not sent: the recovering KMS is not attested" in refused.stderr
        status = httpx.get(f"{url}/v1/recovery/status", verify=str(ca)).json()
        assert status == {"threshold": 2, "received": 0, "needed": 2, "recovered": False}

        assert "1 of 2 received; 1 more needed" in send(owners[0])
        assert not (new_home / "kms" / "root-key.json").exists()
        assert "the KMS has recovered its root key" in send(owners[2])
        assert recovering.wait(60) == 0
        audit = (new_home / "kms" / "audit.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in audit]
        assert [(e["event"], e["threshold"]) for e in events] == [("root-key-recovered", 2)]
        state = json.loads((new_home / "kms" / "state.json").read_text())
        logged = state["log"]["entries"][-1]  # the transparency log says so too
        assert (logged["kind"], logged["threshold"], logged["shares_used"]) == ("recovery", 2, 2)
    finally:
        if recovering.poll() is None:
            recovering.terminate()
            recovering.wait(20)

    # the recovered KMS, started as usual under the new secret, releases the same key
    policy = tmp_path / "release-policy.yaml"
    policy.write_text(json.dumps(Policy.development(worker_home).to_json()))
    port = free_port()
    serving = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "kms", "serve", "--home", str(new_home),
         "--port", str(port), "--policy", str(policy)],
        env={**os.environ, KEY_FILE_ENV: str(new_key)},
    )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", ca, serving, timeout=60)
        with KmsClient(url, ca_file=ca, trust=KmsTrust(identity)) as client:
            released = client.release(
                make_provider("sim", worker_home), [key_id], {key_id: model_digest(manifest)}
            )
        assert released[key_id] == data_key
    finally:
        serving.terminate()
        serving.wait(20)
