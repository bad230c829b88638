"""Argon2id parameters read from the root-key blob, which lies on the untrusted host disk.

Before: ``t``, ``m`` and ``p`` were taken from the blob as they were. A host
could set ``m`` to terabytes or ``p`` to zero (the KMS crashed with an argon2
error instead of a configuration error), ``t`` to billions (the KMS spun at
start-up), or weaken the KDF (``t: 1, m: 8``), which was reported as a wrong
passphrase. Now every parameter and the salt length are bounded, and a blob
outside the bounds is refused before any derivation, naming the parameter.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from trustserve.crypto.rootkey import (
    ARGON2_BOUNDS,
    FileKeyStore,
    PassphraseProtector,
    unlock,
)
from trustserve.errors import ConfigError


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """A passphrase and the root-key blob the KMS wrote with it (default parameters)."""
    passphrase = os.urandom(16).hex()
    path = tmp_path_factory.mktemp("kms") / "root.key"
    unlock(FileKeyStore(path), PassphraseProtector(passphrase))
    blob: dict[str, Any] = json.loads(path.read_bytes())
    return passphrase, blob


def unlock_tampered(tmp_path: Path, passphrase: str, blob: dict[str, Any]) -> None:
    path = tmp_path / "root.key"
    path.write_text(json.dumps(blob))
    unlock(FileKeyStore(path), PassphraseProtector(passphrase))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"m": 2**32 - 1}, "memory cost"),  # 4 TiB
        ({"p": 0}, "parallelism"),
        ({"p": 2**24 - 1}, "parallelism"),
        ({"t": 1}, "time cost"),  # weaker than the default
        ({"m": 8}, "memory cost"),
        ({"t": 2**31}, "time cost"),  # would take days
        ({"t": True}, "time cost"),
        ({"m": "65536"}, "memory cost"),
        ({"salt": base64.b64encode(b"1234").decode()}, "salt length"),
    ],
)
def test_a_tampered_parameter_is_refused_before_any_derivation(
    wrapped: tuple[str, dict[str, Any]], tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    passphrase, blob = wrapped
    started = time.monotonic()
    with pytest.raises(ConfigError, match=named) as refused:
        unlock_tampered(tmp_path, passphrase, {**blob, **change})
    assert "wrong KMS passphrase" not in str(refused.value)
    assert passphrase not in str(refused.value)
    assert time.monotonic() - started < 5


def test_the_untampered_blob_still_unlocks(
    wrapped: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    passphrase, blob = wrapped
    unlock_tampered(tmp_path, passphrase, blob)
    assert blob["t"] >= ARGON2_BOUNDS["t"][0] and blob["m"] >= ARGON2_BOUNDS["m"][0]


def test_the_kms_cannot_be_configured_below_the_bounds_either() -> None:
    with pytest.raises(ConfigError, match="time cost"):
        PassphraseProtector(os.urandom(8).hex(), time_cost=1)
