"""Attack: drop audit records, rebuild the hash chain, sign the head with a key of one's own
and put that key's public half in ``state.json`` beside the log.

The verifier no longer takes the public key from beside the log: ``kms audit
verify`` checks against the identity the auditor names (``--identity``, or
``--bundle`` from an attestation bundle kept earlier), and the KMS refuses to
start when the stored public identity is not its private key's.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.attacks.kms_fixtures import Genuine, genuine_kms
from tests.support import tiny_manifest
from trustserve.attestation import Policy
from trustserve.cli import main
from trustserve.crypto.rootkey import KeyFileProtector
from trustserve.errors import ConfigError
from trustserve.kms.service import KmsService

GENESIS = "0" * 64


def _resign_without(kms_dir: Path, drop: int) -> None:
    """The attacker's rewrite: record ``drop`` removed, chain and head rebuilt, new key."""
    lines = (kms_dir / "audit.jsonl").read_bytes().splitlines()
    del lines[drop - 1]
    prev, out = GENESIS, []
    for seq, line in enumerate(lines, 1):
        record = {**json.loads(line), "seq": seq, "prev": prev}
        raw = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        out.append(raw)
        prev = hashlib.sha256(raw).hexdigest()
    (kms_dir / "audit.jsonl").write_bytes(b"".join(x + b"\n" for x in out))
    forger = Ed25519PrivateKey.generate()
    body = json.dumps({"seq": len(out), "sha256": prev}, sort_keys=True).encode()
    head = {"seq": len(out), "sha256": prev, "signature": base64.b64encode(forger.sign(body))}
    head["signature"] = head["signature"].decode()
    (kms_dir / "audit.head.json").write_text(json.dumps(head))
    state = json.loads((kms_dir / "state.json").read_bytes())
    state["identity"]["public_key"] = base64.b64encode(forger.public_key().public_bytes_raw())
    state["identity"]["public_key"] = state["identity"]["public_key"].decode()
    (kms_dir / "state.json").write_text(json.dumps(state))


@pytest.fixture
def genuine(tmp_path: Path) -> Genuine:
    g = genuine_kms(tmp_path)
    for name in ("a", "b", "c"):
        g.service.create_model_key(tiny_manifest(name, "1"))
    return g


def test_a_resigned_log_fails_verification_against_the_expected_identity(
    genuine: Genuine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = base64.b64encode(genuine.identity).decode()
    verify = ["kms", "audit", "verify", "--home", str(genuine.home), "--identity", identity]
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(genuine.service.attestation_bundle(genuine.sim)))
    assert main(verify) == 0

    _resign_without(genuine.home / "kms", drop=2)
    assert main(verify) == 1
    assert "not signed by this KMS" in capsys.readouterr().out
    from_bundle = ["kms", "audit", "verify", "--home", str(genuine.home), "--bundle", str(bundle)]
    assert main(from_bundle) == 1


def test_the_kms_refuses_to_start_on_a_swapped_public_identity(
    genuine: Genuine, tmp_path: Path
) -> None:
    _resign_without(genuine.home / "kms", drop=1)
    with pytest.raises(ConfigError, match="does not match"):
        KmsService(genuine.home, KeyFileProtector(tmp_path / "kms.key"), Policy.default())
