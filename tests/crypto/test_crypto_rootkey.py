from __future__ import annotations

import os
from pathlib import Path

import pytest

from trustserve.crypto.keywrap import RootKey
from trustserve.crypto.rootkey import (
    FileKeyStore,
    KeyFileProtector,
    PassphraseProtector,
    create_key_file,
    protector_from_env,
    unlock,
)
from trustserve.errors import ConfigError


def _passphrase() -> str:
    return os.urandom(12).hex()


def _same_key(a: RootKey, b: RootKey) -> bool:
    wrapped = a.wrap(b"payload", "model", "k1")
    return b.unwrap(wrapped, "model", "k1") == b"payload"


def test_passphrase_unlocks_the_same_root_key(tmp_path: Path) -> None:
    secret = _passphrase()
    store = FileKeyStore(tmp_path / "root-key.json")
    first = unlock(store, PassphraseProtector(secret))
    again = unlock(store, PassphraseProtector(secret))
    assert _same_key(first, again)
    assert (tmp_path / "root-key.json").stat().st_mode & 0o777 == 0o600
    assert b"argon2id" in store.path.read_bytes()


def test_wrong_passphrase_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "root-key.json")
    unlock(store, PassphraseProtector(_passphrase()))
    before = store.path.read_bytes()
    with pytest.raises(ConfigError, match="wrong KMS passphrase or key file"):
        unlock(store, PassphraseProtector(_passphrase()))
    assert store.path.read_bytes() == before


def test_key_file_protects_and_another_file_is_refused(tmp_path: Path) -> None:
    create_key_file(tmp_path / "a.key")
    create_key_file(tmp_path / "b.key")
    store = FileKeyStore(tmp_path / "root-key.json")
    first = unlock(store, KeyFileProtector(tmp_path / "a.key"))
    assert _same_key(first, unlock(store, KeyFileProtector(tmp_path / "a.key")))
    with pytest.raises(ConfigError, match="wrong KMS passphrase or key file"):
        unlock(store, KeyFileProtector(tmp_path / "b.key"))
    protected_by_passphrase = FileKeyStore(_passphrase_store(tmp_path))
    with pytest.raises(ConfigError, match="set TRUSTSERVE_KMS_PASSPHRASE"):
        unlock(protected_by_passphrase, KeyFileProtector(tmp_path / "a.key"))


def _passphrase_store(tmp_path: Path) -> Path:
    path = tmp_path / "pp-root-key.json"
    unlock(FileKeyStore(path), PassphraseProtector(_passphrase()))
    return path


def test_salts_and_keys_differ_between_installations(tmp_path: Path) -> None:
    secret = _passphrase()
    a, b = FileKeyStore(tmp_path / "a.json"), FileKeyStore(tmp_path / "b.json")
    ka, kb = unlock(a, PassphraseProtector(secret)), unlock(b, PassphraseProtector(secret))
    assert a.path.read_bytes() != b.path.read_bytes()
    with pytest.raises(ConfigError):
        kb.unwrap(ka.wrap(b"x", "model", "k"), "model", "k")


def test_short_key_file_and_missing_secret_are_refused(tmp_path: Path) -> None:
    (tmp_path / "short.key").write_bytes(os.urandom(8))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        KeyFileProtector(tmp_path / "short.key")
    with pytest.raises(ConfigError, match="TRUSTSERVE_KMS_KEY_FILE"):
        protector_from_env({})
    create_key_file(tmp_path / "k")
    with pytest.raises(ConfigError, match="only one"):
        protector_from_env(
            {"TRUSTSERVE_KMS_PASSPHRASE": _passphrase(), "TRUSTSERVE_KMS_KEY_FILE": "k"}
        )
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_key_file(tmp_path / "k")


def test_wrapped_key_does_not_unwrap_under_another_id() -> None:
    root, _ = RootKey.generate()
    wrapped = root.wrap(b"secret", "model", "k1")
    with pytest.raises(ConfigError):
        root.unwrap(wrapped, "model", "k2")
    with pytest.raises(ConfigError):
        root.unwrap(wrapped, "serving", "k1")
