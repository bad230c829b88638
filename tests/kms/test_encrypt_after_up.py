"""``trustserve model encrypt --home H`` after ``up``: the development KMS of that home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import tiny_onnx, write_tiny
from trustserve import archive
from trustserve.crypto.model_encryption import decrypt_archive
from trustserve.crypto.rootkey import KEY_FILE_ENV, PASSPHRASE_ENV
from trustserve.kms.embedded import development_kms


def encrypt(home: Path, src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, KEY_FILE_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "model", "encrypt", str(src),
         "-o", str(out), "--home", str(home)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_encrypt_uses_the_dev_key_file_up_made_and_says_so_loudly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    development_kms(home)  # what `trustserve up` does first: its KMS, with a dev key file
    src = write_tiny(tmp_path / "plain")
    out = encrypt(home, src, tmp_path / "tiny-enc.tsm")
    assert out.returncode == 0, out.stderr
    assert "DEVELOPMENT MODE" in out.stderr and "dev-root.key" in out.stderr
    encrypted = archive.load(tmp_path / "tiny-enc.tsm")
    assert encrypted.encryption is not None
    key = development_kms(home).model_key(str(encrypted.encryption["key_id"]))
    assert decrypt_archive(encrypted, key) == tiny_onnx()  # the stack of that home can serve it


def test_encrypt_without_up_or_a_secret_still_asks_for_one(tmp_path: Path) -> None:
    src = write_tiny(tmp_path / "plain")
    out = encrypt(tmp_path / "home", src, tmp_path / "tiny-enc.tsm")
    assert out.returncode != 0
    assert PASSPHRASE_ENV in out.stderr and "DEVELOPMENT MODE" not in out.stderr
    assert not (tmp_path / "home/kms/dev-root.key").exists()  # no key made behind one's back


def kms_command(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, KEY_FILE_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "kms", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_every_kms_command_finds_the_dev_key_file_as_encrypt_does(tmp_path: Path) -> None:
    """Rotating the serving key of a ``trustserve up`` home needs no secret to be guessed."""
    home = tmp_path / "home"
    development_kms(home)  # what `trustserve up` does first
    keys = []
    for _ in range(2):
        rotated = kms_command(home, "rotate-serving-key")
        assert rotated.returncode == 0, rotated.stderr
        assert "DEVELOPMENT MODE" in rotated.stderr and "dev-root.key" in rotated.stderr
        keys.append(json.loads(rotated.stdout)["key_id"])
    assert keys[0] != keys[1]
    identity = kms_command(home, "identity")
    assert identity.returncode == 0, identity.stderr
    from trustserve.encoding import b64
    from trustserve.kms.state import KmsState

    assert identity.stdout.strip() == b64(KmsState.public_identity(home / "kms" / "state.json"))


def test_kms_commands_without_up_or_a_secret_still_ask_for_one(tmp_path: Path) -> None:
    out = kms_command(tmp_path / "home", "rotate-serving-key")
    assert out.returncode == 2 and PASSPHRASE_ENV in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "home/kms/dev-root.key").exists()
