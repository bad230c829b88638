"""Where the root key lives: a ``KeyStore`` holds it wrapped by an operator secret.

Two protectors wrap it:

* ``PassphraseProtector`` (``TRUSTSERVE_KMS_PASSPHRASE``): argon2id (argon2-cffi)
  with a random 16-byte salt stored beside the wrapped key, then AES-256-GCM.
  The argon2id parameters are stored in the blob, which sits on the untrusted
  host disk, so they are read only within ``ARGON2_BOUNDS``: a tampered blob can
  neither weaken the KDF below the default nor make the KMS spend more than
  1 GiB or about ten default derivations of CPU on it.
* ``KeyFileProtector`` (``TRUSTSERVE_KMS_KEY_FILE``): HKDF-SHA256 over the
  file's bytes (at least 32) with a random salt, then AES-256-GCM.

The stored blob is JSON: method, KDF parameters, salt, nonce, ciphertext. A
``KeyStore`` only loads and stores that blob, so an HSM or cloud KMS can take
the place of ``FileKeyStore`` later.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trustserve import files
from trustserve.crypto.keywrap import RootKey
from trustserve.encoding import b64
from trustserve.errors import ConfigError

WRONG_SECRET = "wrong KMS passphrase or key file"  # noqa: S105 (a message)
PASSPHRASE_ENV = "TRUSTSERVE_KMS_PASSPHRASE"  # noqa: S105 (a variable name)
KEY_FILE_ENV = "TRUSTSERVE_KMS_KEY_FILE"
_AAD = b"trustserve-kms-root-key-v1"
MIN_KEY_FILE = 32
# argon2id parameter -> (least, most) accepted, in the blob and in the constructor.
ARGON2_BOUNDS = {
    "t": (3, 30),  # passes
    "m": (65536, 1048576),  # memory in KiB: 64 MiB .. 1 GiB
    "p": (1, 8),  # lanes
    "salt": (16, 64),  # salt length in bytes
}
_ARGON2_NAMES = {
    "t": "time cost",
    "m": "memory cost (KiB)",
    "p": "parallelism",
    "salt": "salt length",
}


class KeyStore(Protocol):
    """Holds the wrapped root key (bytes it does not interpret)."""

    def load(self) -> bytes | None: ...

    def store(self, blob: bytes) -> None: ...


class FileKeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def store(self, blob: bytes) -> None:
        files.write_secret(self.path, blob)


class Protector(Protocol):
    """Wraps the root key under an operator secret, and unwraps it."""

    method: str

    def wrap(self, root_key: bytes) -> dict[str, Any]: ...

    def unwrap(self, blob: dict[str, Any]) -> bytes: ...


class PassphraseProtector:
    method = "argon2id"

    def __init__(
        self, passphrase: str, time_cost: int = 3, memory_cost_kib: int = 65536, lanes: int = 2
    ) -> None:
        if not passphrase:
            raise ConfigError(f"{PASSPHRASE_ENV} is empty")
        self._secret = passphrase.encode()
        self._params = _argon2_params({"t": time_cost, "m": memory_cost_kib, "p": lanes})

    def __repr__(self) -> str:
        return "PassphraseProtector(<secret>)"

    def _derive(self, salt: bytes, params: Mapping[str, Any]) -> bytes:
        t, m, p = (_argon2_params(params)[k] for k in ("t", "m", "p"))
        _in_bounds("salt", len(salt))
        return hash_secret_raw(self._secret, salt, t, m, p, 32, Type.ID)

    def wrap(self, root_key: bytes) -> dict[str, Any]:
        salt = os.urandom(16)
        return _seal(self._derive(salt, self._params), root_key, {"salt": salt, **self._params})

    def unwrap(self, blob: dict[str, Any]) -> bytes:
        return _open(self._derive(_field(blob, "salt"), blob), blob)


class KeyFileProtector:
    method = "key-file"

    def __init__(self, path: Path) -> None:
        try:
            secret = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read KMS key file {path}: {exc.strerror}") from None
        if len(secret) < MIN_KEY_FILE:
            raise ConfigError(f"KMS key file {path} must hold at least {MIN_KEY_FILE} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "KeyFileProtector(<secret>)"

    def _derive(self, salt: bytes) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_AAD)
        return hkdf.derive(self._secret)

    def wrap(self, root_key: bytes) -> dict[str, Any]:
        salt = os.urandom(32)
        return _seal(self._derive(salt), root_key, {"salt": salt})

    def unwrap(self, blob: dict[str, Any]) -> bytes:
        return _open(self._derive(_field(blob, "salt")), blob)


def create_key_file(path: Path) -> None:
    """Write a new random key file (0600) for ``KeyFileProtector``."""
    if path.exists():
        raise ConfigError(f"{path} exists; refusing to overwrite a key file")
    files.write_secret(path, os.urandom(MIN_KEY_FILE))


def protector_from_env(environ: Mapping[str, str] | None = None) -> Protector:
    env = os.environ if environ is None else environ
    passphrase, key_file = env.get(PASSPHRASE_ENV), env.get(KEY_FILE_ENV)
    if passphrase and key_file:
        raise ConfigError(f"set only one of {PASSPHRASE_ENV} and {KEY_FILE_ENV}")
    if passphrase:
        return PassphraseProtector(passphrase)
    if key_file:
        return KeyFileProtector(Path(key_file))
    raise ConfigError(f"the KMS needs {PASSPHRASE_ENV} or {KEY_FILE_ENV} to unlock its root key")


def unlock(store: KeyStore, protector: Protector) -> RootKey:
    """The root key from ``store``; made and stored the first time. Wrong secret: ConfigError."""
    return RootKey(unlock_raw(store, protector))


def store_root_key(store: KeyStore, protector: Protector, raw: bytes) -> None:
    """Wrap ``raw`` under ``protector`` into ``store`` (owner recovery puts a rebuilt key back)."""
    store.store(json.dumps({"method": protector.method, **protector.wrap(raw)}).encode())


def unlock_raw(store: KeyStore, protector: Protector) -> bytes:
    """``unlock``, as bytes: only for splitting the key among owners (``crypto.shares``)."""
    blob = store.load()
    if blob is None:
        _, raw = RootKey.generate()
        store_root_key(store, protector, raw)
        return raw
    try:
        parsed = json.loads(blob)
    except ValueError:
        raise ConfigError("KMS root key file is damaged (not JSON)") from None
    if not isinstance(parsed, dict):
        raise ConfigError("KMS root key file is damaged")
    method = parsed.get("method")
    if method != protector.method:
        env = PASSPHRASE_ENV if method == PassphraseProtector.method else KEY_FILE_ENV
        raise ConfigError(f"{WRONG_SECRET}: the root key is protected by {method}; set {env}")
    return protector.unwrap(parsed)


def _argon2_params(params: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in ("t", "m", "p"):
        value = params.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"KMS root key file: argon2id {_ARGON2_NAMES[key]} is not an integer")
        out[key] = _in_bounds(key, value)
    return out


def _in_bounds(key: str, value: int) -> int:
    least, most = ARGON2_BOUNDS[key]
    if not least <= value <= most:
        raise ConfigError(
            f"KMS root key file: argon2id {_ARGON2_NAMES[key]} {value} is outside "
            f"{least}..{most} (tampered with, or written by another tool)"
        )
    return value


def _seal(wrapping_key: bytes, root_key: bytes, params: dict[str, Any]) -> dict[str, Any]:
    nonce = os.urandom(12)
    ciphertext = AESGCM(wrapping_key).encrypt(nonce, root_key, _AAD)
    out = {k: b64(v) if isinstance(v, bytes) else v for k, v in params.items()}
    return {**out, "nonce": b64(nonce), "ciphertext": b64(ciphertext)}


def _open(wrapping_key: bytes, blob: dict[str, Any]) -> bytes:
    nonce, ciphertext = _field(blob, "nonce"), _field(blob, "ciphertext")
    try:
        return AESGCM(wrapping_key).decrypt(nonce, ciphertext, _AAD)
    except (InvalidTag, ValueError):
        raise ConfigError(WRONG_SECRET) from None


def _field(blob: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(blob[name], validate=True)
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"KMS root key file is damaged (field {name})") from None
