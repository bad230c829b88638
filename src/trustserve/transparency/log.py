"""The KMS transparency log, kept inside the KMS state document.

The log is the section ``"log"`` of the state (``trustserve.kms.state``)::

    {"entries": [entry, ...],                 # the leaves, oldest first (transparency.entries)
     "witnesses": {name: size},               # the size each witness cosigned last
     "cosigned": {"size", "root", "lines": {name: line}, "at"}}
                                              # cosignatures of the newest cosigned checkpoint

A key and its entry are written by one ``KmsState.update`` (one locked file write, or one
compare-and-set in etcd): a change is never in the state without its entry, and a state
rolled back rolls its log back with it, which the witnesses and the clients then notice.

The tree is RFC 9162's (``trustserve.crypto.merkle``); the checkpoint (C2SP
``tlog-checkpoint``) is signed with the KMS identity key under the origin
``trustserve-kms/<16 hex of SHA-256(identity public key)>``, so whoever verified the KMS
identity derives the log's verifier key itself (``log_verifier``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustserve.crypto import merkle
from trustserve.errors import BadRequest
from trustserve.transparency import note
from trustserve.transparency.entries import encode
from trustserve.transparency.note import ED25519, Checkpoint, Signer, Verifier

MAX_ENTRIES_PER_PAGE = 1000


def origin(identity_public_key: bytes) -> str:
    return f"trustserve-kms/{hashlib.sha256(identity_public_key).hexdigest()[:16]}"


def log_verifier(identity_public_key: bytes) -> Verifier:
    """The log's verifier key (name = origin), derived from the KMS identity public key."""
    public = Ed25519PublicKey.from_public_bytes(identity_public_key)
    return Verifier(origin(identity_public_key), ED25519, public)


def log_signer(identity: Ed25519PrivateKey) -> Signer:
    return Signer(origin(identity.public_key().public_bytes_raw()), ED25519, identity)


def section(state: dict[str, Any]) -> dict[str, Any]:
    """The state's log section, made empty if it is missing."""
    log: dict[str, Any] = state.setdefault("log", {})
    log.setdefault("entries", [])
    log.setdefault("witnesses", {})
    log.setdefault("cosigned", None)
    return log


def append(state: dict[str, Any], entry: dict[str, Any]) -> int:
    """Add ``entry`` to the log in ``state`` (inside a ``KmsState.update``); its index."""
    entries: list[dict[str, Any]] = section(state)["entries"]
    entries.append(entry)
    return len(entries) - 1


def latest(state: dict[str, Any], kind: str, **match: Any) -> tuple[int, dict[str, Any]] | None:
    """The newest entry of ``kind`` whose fields equal ``match`` (index, entry)."""
    entries = state.get("log", {}).get("entries", [])
    for i in range(len(entries) - 1, -1, -1):
        e = entries[i]
        if e.get("kind") == kind and all(e.get(k) == v for k, v in match.items()):
            return i, e
    return None


@dataclass(frozen=True)
class LogView:
    """One reading of the log: its entries, leaf hashes and what the KMS serves of it."""

    entries: list[dict[str, Any]]
    witnesses: dict[str, int]
    cosigned: dict[str, Any] | None
    origin: str

    @classmethod
    def of(cls, state: dict[str, Any]) -> LogView:
        log = state.get("log") or {}
        identity = base64.b64decode(state["identity"]["public_key"])
        return cls(
            list(log.get("entries", [])),
            dict(log.get("witnesses", {})),
            log.get("cosigned"),
            origin(identity),
        )

    @property
    def size(self) -> int:
        return len(self.entries)

    def leaves(self, size: int | None = None) -> list[bytes]:
        return [
            merkle.leaf_hash(encode(e)) for e in self.entries[: self.size if size is None else size]
        ]

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.origin, self.size, merkle.root(self.leaves()))

    def signed(self, signer: Signer) -> str:
        """The current checkpoint signed by the KMS only."""
        text = self.checkpoint().text()
        return note.Note(text, (note.sign(text, signer),)).render()

    def cosignature_lines(self) -> list[str]:
        """The cosignature lines collected for the current checkpoint (none if it has none)."""
        cos = self.cosigned
        if not cos or cos.get("size") != self.size:
            return []
        if cos.get("root") != base64.b64encode(self.checkpoint().root).decode():
            return []
        return [str(line) for _, line in sorted(cos.get("lines", {}).items())]

    def signed_with_cosignatures(self, signer: Signer) -> str:
        return self.signed(signer) + "".join(self.cosignature_lines())

    # ---- the routes' answers (bounds checked before any hashing) ----

    def page(self, start: int, end: int) -> dict[str, Any]:
        if not 0 <= start < self.size:
            raise BadRequest(f"start must be at least 0 and below the log size {self.size}")
        if not start < end <= self.size:
            raise BadRequest(f"end must be above start ({start}) and at most the size {self.size}")
        if end - start > MAX_ENTRIES_PER_PAGE:
            raise BadRequest(f"end - start must be at most {MAX_ENTRIES_PER_PAGE}")
        rows = [{"index": i, "entry": self.entries[i]} for i in range(start, end)]
        return {"size": self.size, "entries": rows}

    def consistency(self, old: int, new: int) -> list[bytes]:
        if not 0 < old <= self.size:
            raise BadRequest(f"old must be above 0 and at most the log size {self.size}")
        if not old <= new <= self.size:
            raise BadRequest(f"new must be at least old ({old}) and at most the size {self.size}")
        return merkle.consistency_proof(self.leaves(new), old)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        if not 0 < size <= self.size:
            raise BadRequest(f"size must be above 0 and at most the log size {self.size}")
        if not 0 <= index < size:
            raise BadRequest(f"index must be at least 0 and below size ({size})")
        return merkle.inclusion_proof(self.leaves(size), index)


def b64_proof(proof: list[bytes]) -> list[str]:
    return [base64.b64encode(p).decode() for p in proof]


def record_cosignature(
    state: dict[str, Any], name: str, size: int, root: bytes, line: str, now: float
) -> None:
    """Keep ``name``'s cosignature of the checkpoint ``size``/``root`` (in an update)."""
    log = section(state)
    log["witnesses"][name] = max(size, int(log["witnesses"].get(name, 0)))
    root_b64 = base64.b64encode(root).decode()
    cos = log["cosigned"]
    if cos is not None and cos.get("size") == size and cos.get("root") == root_b64:
        cos["lines"][name] = line
        cos["at"] = now
    elif cos is None or int(cos.get("size", 0)) < size:
        log["cosigned"] = {"size": size, "root": root_b64, "lines": {name: line}, "at": now}


def record_witness_size(state: dict[str, Any], name: str, size: int) -> None:
    section(state)["witnesses"][name] = size
