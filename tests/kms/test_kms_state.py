from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kms.conftest import MakeService
from tests.support import tiny_manifest
from trustserve.archive import Manifest
from trustserve.attestation import Policy
from trustserve.crypto.rootkey import PassphraseProtector
from trustserve.errors import BadRequest, ConfigError, Conflict, NotFound
from trustserve.kms.service import KmsService


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_restart_keeps_every_key(make_service: MakeService) -> None:
    first = make_service()
    model_a = first.create_model_key(tiny_manifest("a", "1"))
    model_b = first.create_model_key(tiny_manifest("b", "2"))
    first.rotate_serving_key()
    serving = first.state.serving_keys(first.clock())
    broker = first.state.broker_key()
    identity = first.state.identity_public_key()
    keys = {k: first.model_key(k) for k in (model_a, model_b)}

    again = make_service()
    assert {k: again.model_key(k) for k in keys} == keys
    assert again.state.serving_keys(again.clock()) == serving
    assert len(serving.keys) == 2
    assert again.state.broker_key() == broker
    assert again.state.identity_public_key() == identity
    with pytest.raises(Conflict):
        again.create_model_key(tiny_manifest("a", "1"))


def test_model_keys_are_one_per_version_and_unknown_ids_are_404(
    make_service: MakeService,
) -> None:
    kms = make_service()
    v1 = kms.create_model_key(tiny_manifest("m", "1"))
    v2 = kms.create_model_key(tiny_manifest("m", "2"))
    assert v1 != v2 and kms.model_key(v1) != kms.model_key(v2)
    with pytest.raises(Conflict, match="already has a key"):
        kms.create_model_key(tiny_manifest("m", "1"))
    with pytest.raises(NotFound):
        kms.model_key("model-m-3-00000000")
    with pytest.raises(BadRequest):
        kms.create_model_key(Manifest("../etc", "1", (), ()))


def test_no_key_is_stored_in_clear(make_service: MakeService, home: Path) -> None:
    kms = make_service()
    data_key = kms.model_key(kms.create_model_key(tiny_manifest("m", "1")))
    broker = kms.state.broker_key()[1]
    serving = kms.state.serving_keys(kms.clock()).current.private_key
    assert serving is not None
    blobs = b"".join(_snapshot(home).values())
    for secret in (data_key[-32:], broker, serving):
        assert secret not in blobs
    assert (home / "kms" / "state.json").stat().st_mode & 0o777 == 0o600


def test_wrong_passphrase_is_clear_and_leaves_state_untouched(home: Path) -> None:
    secret = os.urandom(12).hex()
    kms = KmsService(home, PassphraseProtector(secret), Policy.default())
    kms.create_model_key(tiny_manifest("m", "1"))
    before = _snapshot(home)
    with pytest.raises(ConfigError, match="wrong KMS passphrase or key file"):
        KmsService(home, PassphraseProtector(os.urandom(12).hex()), Policy.default())
    assert _snapshot(home) == before


_WRITER = """
import sys
from pathlib import Path
from trustserve.attestation import Policy
from trustserve.crypto.rootkey import KeyFileProtector
from trustserve.kms.service import KmsService
from tests.support import tiny_manifest
home, key, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
kms = KmsService(home, KeyFileProtector(key), Policy.default())
sys.stdin.readline()
for i in range(60):
    kms.create_model_key(tiny_manifest(f"{tag}{i}", "1"))
"""


def test_concurrent_writers_never_lose_or_corrupt_keys(
    make_service: MakeService, home: Path, key_file: Path
) -> None:
    make_service()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(home), str(key_file), tag],
            stdin=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    for p in procs:  # both are initialised; start writing at the same moment
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    kms = make_service()
    state = json.loads((home / "kms" / "state.json").read_bytes())
    models = sorted(e["model"] for e in state["models"].values())
    assert models == sorted(f"{t}{i}" for t in "ab" for i in range(60))
    for key_id in state["models"]:
        assert len(kms.model_key(key_id)) > 32
    assert kms.verify_audit().ok
    assert kms.verify_audit().lines == 120
