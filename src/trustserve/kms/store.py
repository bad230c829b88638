"""The KMS state in a shared store that is not trusted: one sealed, versioned document.

A ``StateStore`` (etcd, ``trustserve.kms.etcd_store``) holds bytes at one key and
changes them only by compare-and-set on the store's own revision of that key. What
it holds is the whole KMS state document, sealed under the root key:

    {"format": 2, "version": N, "sealed": b64(nonce || AES-256-GCM(document))}

with the associated data naming the document (``state`` and the store's key) and its
version ``N``. ``N`` is in the clear too, so the store can be read without the key,
but it is authenticated: edit it, or put back a blob sealed for another store key or
another KMS, and the blob does not open.

Each replica remembers the highest version it has seen (in memory, and in
``<home>/kms/state-version``, so a restart remembers it too). A blob older than that
(a rolled-back store) is refused, and so is a missing document once one was seen (a
deleted one). A replica that has seen nothing cannot tell a rolled-back document from
the latest one on its own; the transparency log is to pin the latest head.

Every change is read, check, change, ``version + 1``, seal, compare-and-set; a lost
compare-and-set reloads and applies the change again, so two replicas making a key for
the same model version cannot both win: the second sees the first's key and says so.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from trustserve import files
from trustserve.crypto.keywrap import RootKey
from trustserve.crypto.rootkey import KeyStore
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, ConfigError, Forbidden

log = logging.getLogger("trustserve.kms")
T = TypeVar("T")
FORMAT = 2
MAX_ATTEMPTS = 100  # compare-and-set rounds lost in a row before giving up
RECENT = "recent_writes"  # ids of the last writes, in the document
KEEP_RECENT = 256


class StateStore(Protocol):
    """Bytes at one key, changed only by compare-and-set on the store's revision."""

    where: str  # names the store and key in messages (never a secret)

    def load(self) -> tuple[bytes | None, int]:
        """The stored bytes (None if absent) and their revision (0 if absent)."""
        ...

    def compare_and_set(self, expected_revision: int, blob: bytes) -> bool:
        """Store ``blob`` if the revision is still ``expected_revision``; False if not."""
        ...

    def root_key_store(self) -> KeyStore:
        """Where the replicas keep the root key wrapped by the operator secret."""
        ...


class SealedState:
    """The KMS state document in a ``StateStore``, sealed, versioned, changed by CAS."""

    def __init__(self, store: StateStore, root: RootKey, seen_path: Path) -> None:
        self.store = store
        self._root = root
        self._seen_path = seen_path
        self._lock = threading.Lock()
        self.seen = self._load_seen()
        self._cache: tuple[bytes, str, int] | None = None  # the last blob opened

    # ---- the version this replica has seen ----

    def _load_seen(self) -> int:
        try:
            return int(self._seen_path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            raise ConfigError(
                f"{self._seen_path} is unreadable (remove it to start over)"
            ) from None

    def saw(self, version: int) -> None:
        """Remember ``version`` as seen (e.g. the version the replica that gave this one
        the root key had seen): an older document is refused from now on."""
        self._saw(version)

    def _saw(self, version: int) -> None:
        with self._lock:  # request threads: the file must end with the highest
            if version > self.seen:
                self.seen = version
                files.write_atomic(self._seen_path, f"{version}\n".encode())

    # ---- sealing ----

    def _label(self, version: int) -> str:
        return f"{self.store.where}#{version}"

    def seal(self, document: dict[str, Any], version: int) -> bytes:
        plain = json.dumps(document, sort_keys=True).encode()
        sealed = self._root.wrap(plain, "state", self._label(version))
        return json.dumps({"format": FORMAT, "version": version, "sealed": b64(sealed)}).encode()

    def open(self, blob: bytes) -> tuple[dict[str, Any], int]:
        """The document and its version; refused if it is not this KMS's or is older than
        what this replica has seen."""
        if self._cache is not None and self._cache[0] == blob:
            _, plain, version = self._cache
        else:
            plain, version = self._open(blob)
        if version < self.seen:
            raise Forbidden(
                f"KMS state in {self.store.where} rolled back from version {self.seen} to "
                f"{version}: the store gave an older document than this replica has seen; "
                f"refusing it (after restoring etcd from a backup on purpose, remove "
                f"{self._seen_path} on each replica)"
            )
        document = json.loads(plain)
        if not isinstance(document, dict):
            raise Forbidden(f"KMS state in {self.store.where} is not a document")
        self._saw(version)
        self._cache = (blob, plain, version)
        return document, version

    def _open(self, blob: bytes) -> tuple[str, int]:
        try:
            outer = json.loads(blob)
            version, sealed = outer["version"], unb64(outer["sealed"], "sealed")
            if outer.get("format") != FORMAT or type(version) is not int or version < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError, BadRequest):
            raise Forbidden(
                f"KMS state in {self.store.where} is not a sealed KMS state document "
                "(edited or replaced); refusing it"
            ) from None
        try:
            plain = self._root.unwrap(sealed, "state", self._label(version))
        except ConfigError:
            raise Forbidden(
                f"KMS state in {self.store.where} (version {version}) does not open under "
                "this KMS's root key: it was edited, swapped for another KMS's or another "
                "key's, or its version was changed; refusing it"
            ) from None
        return plain.decode(), version

    # ---- reading and changing ----

    def current(self) -> tuple[dict[str, Any] | None, int, int]:
        """The document (None if there is none yet), its version and the store revision."""
        blob, revision = self.store.load()
        if blob is None:
            if self.seen:
                raise Forbidden(
                    f"KMS state in {self.store.where} is gone, but this replica has seen "
                    f"version {self.seen}: the store lost or deleted it; refusing to start "
                    f"over (restore etcd from a backup, then remove {self._seen_path})"
                )
            return None, 0, revision
        document, version = self.open(blob)
        return document, version, revision

    def read(self) -> dict[str, Any]:
        document, _, _ = self.current()
        if document is None:
            raise ConfigError(f"there is no KMS state in {self.store.where}")
        return document

    def create(self, initial: Callable[[], dict[str, Any]]) -> bool:
        """Store ``initial()`` as version 1 unless a document exists; True if this did."""
        document, _, revision = self.current()
        if document is not None:
            return False
        if self.store.compare_and_set(revision, self.seal(initial(), 1)):
            self._saw(1)
            return True
        self.read()  # another replica made it first: check it opens
        return False

    def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Apply ``change`` to the latest document and store it as the next version; a
        lost compare-and-set (another replica changed it meanwhile) applies it again.

        A write whose answer was lost (its store member died) may have landed all the
        same, and another replica may have written after it, so the store cannot tell
        it was ours. Each write therefore leaves its random id in the document's list of
        recent writes; finding ours there, the change is done, with the result of the
        attempt that wrote it (applying it again would, e.g., find the model key it made
        and call it a conflict)."""
        write_id = secrets.token_hex(16)
        attempted: list[T] = []
        for _ in range(MAX_ATTEMPTS):
            document, version, revision = self.current()
            if document is None:
                raise ConfigError(f"there is no KMS state in {self.store.where}")
            if attempted and write_id in document.get(RECENT, []):
                return attempted[-1]
            result = change(document)
            document[RECENT] = [*document.get(RECENT, []), write_id][-KEEP_RECENT:]
            attempted.append(result)
            if self.store.compare_and_set(revision, self.seal(document, version + 1)):
                self._saw(version + 1)
                return result
            log.info("KMS state changed by another replica meanwhile; applying again")
        raise ConfigError(
            f"KMS state in {self.store.where}: {MAX_ATTEMPTS} changes in a row lost to "
            "other replicas; giving up"
        )
