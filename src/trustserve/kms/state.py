"""The KMS state on disk: every key wrapped by the root key, in ``<home>/kms/``.

Files: ``root-key.json`` (the root key wrapped by the operator secret, via the
``FileKeyStore``), ``state.json`` (identity, serving, broker and model keys,
each wrapped under the root key with its key id as associated data), ``lock``
(an ``fcntl`` lock every writer holds while it reads, changes and atomically
replaces ``state.json``; other processes wait, so none loses another's write).

Replicas on several hosts keep the same document in a shared ``StateStore`` (etcd)
instead, sealed and versioned by ``trustserve.kms.store.SealedState``; the root key
then lives in that store too (wrapped by the operator secret), and ``<home>/kms/``
keeps only what is this replica's own (the audit log, the highest version seen).
"""

from __future__ import annotations

import fcntl
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustserve import files
from trustserve.archive import NAME_RE
from trustserve.crypto import hpke, model_encryption
from trustserve.crypto.keys import ServingKey, ServingKeySet, new_broker_key, new_key_id
from trustserve.crypto.keywrap import RootKey
from trustserve.crypto.rootkey import FileKeyStore, KeyStore, Protector, unlock
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, ConfigError, Conflict, NotFound
from trustserve.home import kms_dir as kms_dir  # where the KMS state lives under HOME
from trustserve.kms import logged
from trustserve.kms.store import SealedState, StateStore
from trustserve.transparency import entries
from trustserve.transparency import log as tlog

T = TypeVar("T")
DAY = 86400.0
_FORMAT = 1


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (and across threads, each opening its own fd)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rotation(entries: list[dict[str, Any]], i: int) -> int:
    """The rotation counter of serving key ``i`` (current first). A state written before
    the counter was kept counts its keys from the oldest: ids differ all the same."""
    value = entries[i].get("rotation")
    return value if type(value) is int and value >= 0 else len(entries) - 1 - i


class KmsState:
    """Keys under the root key. Every read sees the file as it is now (other writers included)."""

    def __init__(
        self,
        home: Path,
        protector: Protector | None,
        keystore: KeyStore | None = None,
        serving_key_lifetime: float = 30 * DAY,
        store: StateStore | None = None,
        root: RootKey | None = None,
        state_version: int = 0,
    ) -> None:
        """``protector`` unlocks the root key (the operator secret); a replica that joined
        a running one by attestation (``trustserve.kms.join``) has the ``root`` key instead,
        and then needs a shared ``store`` whose document is at least ``state_version``
        (what that replica had seen: this one has seen nothing)."""
        self.dir = kms_dir(home)
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "lock"
        self.lifetime = serving_key_lifetime
        self._shared: SealedState | None = None
        if store is not None:
            keys = keystore or store.root_key_store()
            self._open_shared(store, keys, protector, root, state_version)
            return
        if protector is None:
            raise ConfigError("a KMS on local files needs the operator secret for its root key")
        store_ = keystore or FileKeyStore(self.dir / "root-key.json")
        with self.locked():
            if self.path.exists() and store_.load() is None:
                raise ConfigError(f"KMS state {self.path} exists but its root key is missing")
            self._root = unlock(store_, protector)
            if not self.path.exists():
                self._write(self._initial(time.time()))
        self._check_root()
        self._ensure_log()

    def _open_shared(
        self,
        store: StateStore,
        keystore: KeyStore,
        protector: Protector | None,
        root: RootKey | None,
        state_version: int = 0,
    ) -> None:
        """The state in a store shared by replicas: the first replica makes the root key
        and the document (by compare-and-set: if two start at once, one wins and the
        other takes the winner's); a joined replica brings the root key and must find
        the document there."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if root is not None:
            self._root = root
            self._shared = SealedState(store, self._root, self.dir / "state-version")
            self._shared.saw(state_version)  # an older document is a rollback
            if self._shared.current()[0] is None:
                raise ConfigError(f"no KMS state in {store.where} to join")
            self._check_root()
            self._ensure_log()
            return
        if protector is None:
            raise ConfigError(
                "the KMS needs the operator secret to unlock its root key, or --join to "
                "receive it from a running replica"
            )
        if keystore.load() is None and store.load()[0] is not None:
            raise ConfigError(f"KMS state in {store.where} exists but its root key is missing")
        try:
            self._root = unlock(keystore, protector)
        except Conflict:
            self._root = unlock(keystore, protector)
        self._shared = SealedState(store, self._root, self.dir / "state-version")
        self._shared.create(lambda: self._initial(time.time()))
        self._check_root()
        self._ensure_log()

    def version(self) -> int:
        """The latest state version (0 on local files), for a replica that joins."""
        return self._shared.current()[1] if self._shared is not None else 0

    @property
    def root(self) -> RootKey:
        """The root key, for sealing it to a replica that joins (``trustserve.kms.join``)."""
        return self._root

    # ---- plumbing ----

    def locked(self) -> Any:
        return file_lock(self.lock_path)

    def read(self) -> dict[str, Any]:
        if self._shared is not None:
            return self._shared.read()
        try:
            raw = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"KMS state {self.path} is unreadable: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ConfigError(f"KMS state {self.path} has an unknown format")
        return raw

    def _write(self, state: dict[str, Any]) -> None:
        files.write_secret(self.path, json.dumps(state, indent=1, sort_keys=True).encode())

    def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Apply ``change`` to the current state under the lock and store the result atomically
        (in a shared store: by compare-and-set, applied again if another replica won)."""
        if self._shared is not None:
            return self._shared.update(change)
        with self.locked():
            state = self.read()
            result = change(state)
            self._write(state)
            return result

    @property
    def where(self) -> str:
        return self._shared.store.where if self._shared is not None else str(self.path)

    def shared_admin_token(self) -> str | None:
        """The management token every replica of a shared state accepts (made, wrapped
        under the root key, by the first replica that asks); None for a KMS on files,
        whose token is the file ``admin.token`` alone."""
        if self._shared is None:
            return None

        def change(state: dict[str, Any]) -> None:
            if "admin_token" not in state:
                token = secrets.token_urlsafe(32).encode()
                state["admin_token"] = {"wrapped": self._wrap(token, "admin-token", "admin")}

        if "admin_token" not in self.read():
            self.update(change)
        return self._unwrap(self.read()["admin_token"], "admin-token", "admin").decode()

    def _wrap(self, key: bytes, purpose: str, key_id: str) -> str:
        return b64(self._root.wrap(key, purpose, key_id))

    def _unwrap(self, entry: dict[str, Any], purpose: str, key_id: str) -> bytes:
        return self._root.unwrap(unb64(entry["wrapped"], "KMS state field"), purpose, key_id)

    def _check_root(self) -> None:
        """The root key must open this state (a root key file from elsewhere would not),
        and the stored public identity must be the wrapped private key's: the audit log
        is verified with the public one, so a swapped public key would vouch for a log
        re-signed by someone else."""
        private = self.identity_key().public_key().public_bytes_raw()
        if private != self.identity_public_key():
            raise ConfigError(
                f"KMS state {self.where}: the stored identity public key does not match the "
                "identity private key (the state was tampered with); refusing to start"
            )

    def _ensure_log(self) -> None:
        """A state made before the transparency log gets one (``logged.backfill``)."""
        if "log" not in self.read():
            self.update(logged.backfill)

    def _initial(self, now: float) -> dict[str, Any]:
        identity = Ed25519PrivateKey.generate()
        identity_id = new_key_id("id")
        broker_id = new_key_id("brk")
        serving = self._serving_entry(ServingKey.generate(now + self.lifetime), now, 0)
        return {
            "format": _FORMAT,
            "identity": {
                "key_id": identity_id,
                "public_key": b64(identity.public_key().public_bytes_raw()),
                "wrapped": self._wrap(identity.private_bytes_raw(), "identity", identity_id),
            },
            "serving": [serving],
            "broker": {
                "key_id": broker_id,
                "wrapped": self._wrap(new_broker_key(), "broker", broker_id),
            },
            "models": {},
            "log": {
                "entries": [logged.serving_entry(serving, now)],
                "witnesses": {},
                "cosigned": None,
            },
        }

    def _serving_entry(self, key: ServingKey, now: float, rotation: int) -> dict[str, Any]:
        assert key.private_key is not None
        return {
            "key_id": key.key_id,
            "public_key": b64(key.public_key),
            "not_after": key.not_after,
            "created_at": now,
            "rotation": rotation,  # the rotation counter: its OHTTP key config id mod 256
            "wrapped": self._wrap(key.private_key, "serving", key.key_id),
        }

    # ---- keys ----

    def identity_key(self) -> Ed25519PrivateKey:
        entry = self.read()["identity"]
        return Ed25519PrivateKey.from_private_bytes(
            self._unwrap(entry, "identity", entry["key_id"])
        )

    def identity_public_key(self) -> bytes:
        return unb64(self.read()["identity"]["public_key"], "KMS state field")

    @staticmethod
    def public_identity(path: Path) -> bytes:
        """The identity public key from a state file, without unlocking anything."""
        try:
            raw = json.loads(path.read_bytes())["identity"]["public_key"]
            return unb64(raw, "KMS state field")
        except (OSError, ValueError, KeyError, TypeError, BadRequest):
            raise ConfigError(f"KMS state {path} is unreadable") from None

    def broker_key(self) -> tuple[str, bytes]:
        entry = self.read()["broker"]
        return entry["key_id"], self._unwrap(entry, "broker", entry["key_id"])

    def serving_keys(self, now: float, private: bool = True) -> ServingKeySet:
        """The serving keys still valid at ``now``, current first.

        Each public key is checked against its wrapped private key, also when only the
        public halves are wanted: those are what the KMS signs into its attestation
        bundle, and the state lies on the host's disk. A public key swapped there would
        have every client encrypt to the host."""
        entries = self.read()["serving"]
        keys = []
        for i, e in enumerate(entries):
            if i and float(e["not_after"]) < now:
                continue
            secret = self._unwrap(e, "serving", e["key_id"])
            public = unb64(e["public_key"], "KMS state field")
            if hpke.public_key_of(secret) != public:
                raise ConfigError(
                    f"KMS state {self.path}: the stored public key of serving key "
                    f"{e['key_id']} is not its wrapped private key's (the state was tampered "
                    "with); refusing to publish it"
                )
            rotation = _rotation(entries, i) % 256
            keys.append(
                ServingKey(
                    e["key_id"],
                    public,
                    float(e["not_after"]),
                    secret if private else None,
                    rotation,
                )
            )
        return ServingKeySet(tuple(keys))

    def rotate_serving_key(self, now: float, grace: float = DAY) -> ServingKey:
        """A new current key; the previous one is accepted until ``now + grace`` at most.
        The rotation counter goes up by one: the new key's OHTTP key config id is the
        previous one's plus one (mod 256), never the same."""

        def change(state: dict[str, Any]) -> ServingKey:
            rotation = _rotation(state["serving"], 0) + 1
            key = ServingKey.generate(now + self.lifetime, rotation)
            previous = state["serving"][0]
            previous["not_after"] = min(float(previous["not_after"]), now + grace)
            previous["rotation"] = rotation - 1
            state["serving"] = [self._serving_entry(key, now, rotation), previous]
            tlog.append(state, logged.serving_entry(state["serving"][0], now))
            return key

        return self.update(change)

    def create_model_key(self, model: str, version: str, digest: str, now: float) -> str:
        """A new data key for the archive of ``model`` ``version`` with manifest ``digest``.

        Conflict if that model version already has a key: an existing key is never
        handed out again (a new archive means a new version).
        """
        for name, what in ((model, "model name"), (version, "model version")):
            if not NAME_RE.match(name):
                raise BadRequest(f"{what} {name!r} must match {NAME_RE.pattern}")

        def change(state: dict[str, Any]) -> str:
            for key_id, entry in state["models"].items():
                if entry["model"] == model and entry["version"] == version:
                    raise Conflict(
                        f"model {model} version {version} already has a key ({key_id}); "
                        "existing keys are never handed out again: publish a new version"
                    )
            key_id = f"model-{model}-{version}-{secrets.token_hex(4)}"
            wrapped = self._wrap(model_encryption.new_data_key(), "model", key_id)
            state["models"][key_id] = {
                "model": model,
                "version": version,
                "digest": digest,
                "created_at": now,
                "wrapped": wrapped,
            }
            tlog.append(state, logged.model_entry(key_id, state["models"][key_id]))
            return key_id

        return self.update(change)

    def model_digest(self, key_id: str) -> str | None:
        """The archive digest recorded for a model key (None for keys made before digests)."""
        entry = self.read()["models"].get(key_id)
        if entry is None:
            raise NotFound(f"unknown key id {key_id!r}")
        digest = entry.get("digest")
        return str(digest) if digest is not None else None

    def model_key(self, key_id: str) -> bytes:
        entry = self.read()["models"].get(key_id)
        if entry is None:
            raise NotFound(f"unknown key id {key_id!r}")
        return self._unwrap(entry, "model", key_id)

    def model_keys(self) -> dict[str, dict[str, Any]]:
        """Public metadata of every model key."""
        return {
            key_id: {k: v for k, v in entry.items() if k != "wrapped"}
            for key_id, entry in self.read()["models"].items()
        }

    # ---- the transparency log (trustserve.transparency.log) ----

    def log_view(self) -> tlog.LogView:
        return tlog.LogView.of(self.read())

    def append_log(self, entry: dict[str, Any]) -> int:
        """Append ``entry`` alone (a change that is not a key: a policy, a recovery)."""
        return self.update(lambda state: tlog.append(state, entry))

    def log_recovery(self, threshold: int, shares_used: int) -> int:
        """Log a recovery of the root key from ``shares_used`` owners' shares."""
        return self.append_log(entries.recovery(threshold, shares_used, time.time()))
