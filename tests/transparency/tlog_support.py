"""A transparency log built in a test, as the KMS keeps one (contract: /tmp/notes/tlog_contract.md).

Fresh random keys every time: the log's key stands in for the KMS identity key, each witness
has its own. ``field`` builds the attestation bundle's ``transparency`` field the way the KMS
does (checkpoint with cosignatures, the entries a client relies on with inclusion proofs),
so the client side is tested before the KMS produces it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustserve.crypto import merkle
from trustserve.keyrelease.bundle import canonical
from trustserve.transparency import note
from trustserve.transparency.entries import encode
from trustserve.transparency.log import origin as log_origin
from trustserve.transparency.note import COSIGNATURE_V1, ED25519, Checkpoint, Signer


def new_witness(name: str) -> Signer:
    return Signer(name, COSIGNATURE_V1, Ed25519PrivateKey.generate())


def policy_entry(policy: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(canonical(policy)).hexdigest()  # the bytes the bundle binds
    return {"kind": "release-policy", "time": int(time.time()), "sha256": digest, "policy": policy}


def key_entry(key: dict[str, Any], rotation: int = 0) -> dict[str, Any]:
    return {
        "kind": "serving-key",
        "time": int(time.time()),
        "key_id": key["key_id"],
        "public_key": key["public_key"],
        "not_after": int(key["not_after"]),
        "rotation": rotation,
    }


def model_entry(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "model-key",
        "time": int(time.time()),
        "name": model["name"],
        "version": model["version"],
        "digest": model["digest"],
        "key_id": f"{model['name']}-{model['version']}",
    }


class TestLog:
    """An append-only list of entries, signed checkpoints over any prefix of it."""

    __test__ = False

    def __init__(self, identity: Ed25519PrivateKey | None = None) -> None:
        self.identity = identity or Ed25519PrivateKey.generate()
        self.public = self.identity.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.origin = log_origin(self.public)
        self.signer = Signer(self.origin, ED25519, self.identity)
        self.entries: list[dict[str, Any]] = []

    def append(self, entry: dict[str, Any]) -> int:
        self.entries.append(entry)
        return len(self.entries) - 1

    def leaves(self, size: int | None = None) -> list[bytes]:
        chosen = self.entries if size is None else self.entries[:size]
        return [merkle.leaf_hash(encode(e)) for e in chosen]

    @property
    def size(self) -> int:
        return len(self.entries)

    def checkpoint(self, size: int | None = None, witnesses: tuple[Signer, ...] = ()) -> str:
        """The signed note of the checkpoint of the first ``size`` entries, cosigned."""
        size = self.size if size is None else size
        text = Checkpoint(self.origin, size, merkle.root(self.leaves(size))).text()
        stamp = int(time.time())
        sigs = [note.sign(text, self.signer), *(note.sign(text, w, stamp) for w in witnesses)]
        return note.Note(text, tuple(sigs)).render()

    def consistency(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(self.leaves(new), old)

    def proof(self, index: int, size: int | None = None) -> list[str]:
        path = merkle.inclusion_proof(self.leaves(size), index)
        return [base64.b64encode(p).decode() for p in path]

    def field(
        self,
        indices: list[int],
        size: int | None = None,
        witnesses: tuple[Signer, ...] = (),
    ) -> dict[str, Any]:
        """The bundle's ``transparency`` field: a checkpoint and the chosen entries' proofs."""
        size = self.size if size is None else size
        return {
            "checkpoint": self.checkpoint(size, witnesses),
            "entries": [
                {"index": i, "entry": self.entries[i], "proof": self.proof(i, size)}
                for i in indices
            ],
        }
