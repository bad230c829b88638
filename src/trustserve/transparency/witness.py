"""A witness (C2SP ``tlog-witness``): cosigns a log's checkpoint only after checking that it
extends the last one it cosigned, so it never cosigns two views of one log.

The witness needs no TEE and is trusted by nobody but the clients that name its key: the KMS
sends it ``old <size>``, a consistency proof and the new signed checkpoint; the witness checks
the log's signature, that ``old`` is the size it cosigned last (409 with that size if not),
the proof (422 if it fails: a fork or a rollback), persists the new size and root, and only
then answers with its timestamped cosignature. Check and persist happen under one lock, so
two concurrent submissions cannot roll the record back.

The record is one JSON file (origin → size, root), written to a temporary file, fsynced and
renamed. Deleting it makes the witness forget; an operator keeps it like any other key state.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from trustserve.crypto import merkle
from trustserve.errors import TransparencyRefused
from trustserve.transparency import note
from trustserve.transparency.note import Checkpoint, Signer, Verifier

MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 16 * 1024


@dataclass
class WitnessAnswer:
    """An HTTP status, a content type and a text body, as the spec defines each case."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class Witness:
    def __init__(self, signer: Signer, logs: dict[str, list[Verifier]], state: Path) -> None:
        if signer.kind != note.COSIGNATURE_V1:
            raise ValueError("a witness signs timestamped cosignatures (type 0x04)")
        self.signer = signer
        self.logs = logs
        self.state = state
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, object]]:
        if not self.state.exists():
            return {}
        data: dict[str, dict[str, object]] = json.loads(self.state.read_text())
        return data

    def _save(self, records: dict[str, dict[str, object]]) -> None:
        tmp = self.state.with_name(self.state.name + ".tmp")
        with tmp.open("w") as out:
            json.dump(records, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.state)

    def latest(self, origin: str) -> tuple[int, bytes]:
        record = self._load().get(origin)
        if record is None:
            return 0, merkle.EMPTY_ROOT
        return int(str(record["size"])), base64.b64decode(str(record["root"]))

    def add_checkpoint(self, body: bytes) -> WitnessAnswer:
        if len(body) > MAX_REQUEST_BYTES:
            return WitnessAnswer(
                413, f"a request of {len(body)} bytes is over {MAX_REQUEST_BYTES}\n"
            )
        try:
            old, proof, signed = _parse_request(body)
            checkpoint = Checkpoint.from_text(signed.text)
        except TransparencyRefused as err:
            return WitnessAnswer(400, f"{err}\n")
        verifiers = self.logs.get(checkpoint.origin)
        if verifiers is None:
            return WitnessAnswer(404, f"unknown log {checkpoint.origin[:100]}\n")
        try:
            if not note.verified_by(signed, verifiers):
                return WitnessAnswer(403, "no signature by the log's key\n")
        except TransparencyRefused as err:
            return WitnessAnswer(403, f"{err}\n")
        if old > checkpoint.size:
            return WitnessAnswer(
                400, f"old size {old} is over the checkpoint's {checkpoint.size}\n"
            )
        if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
            return WitnessAnswer(422, "a checkpoint of size 0 must have the empty tree's root\n")
        with self._lock:
            size, root = self.latest(checkpoint.origin)
            if old != size:
                return WitnessAnswer(409, f"{size}\n", "text/x.tlog.size")
            try:
                _check_extends(old, root, checkpoint, proof)
            except TransparencyRefused as err:
                return WitnessAnswer(422, f"{err}\n")
            records = self._load()
            records[checkpoint.origin] = {
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
            }
            self._save(records)
        cosignature = note.sign(signed.text, self.signer, timestamp=int(time.time()))
        return WitnessAnswer(200, note.signature_line(*cosignature))


def _check_extends(old: int, old_root: bytes, checkpoint: Checkpoint, proof: list[bytes]) -> None:
    if old == 0:
        if proof:
            raise TransparencyRefused("a proof from size 0 must be empty")
        return
    merkle.verify_consistency(old, checkpoint.size, old_root, checkpoint.root, proof)


def _parse_request(body: bytes) -> tuple[int, list[bytes], note.Note]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise TransparencyRefused("the request is not UTF-8") from None
    head, sep, rest = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines[0].startswith("old "):
        raise TransparencyRefused("the request starts with 'old <size>', proof lines, a blank line")
    size = lines[0][4:]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise TransparencyRefused(f"old size {size[:40]!r} is not a decimal number")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise TransparencyRefused(f"{len(lines) - 1} proof lines is over {MAX_PROOF_LINES}")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except binascii.Error:
        raise TransparencyRefused("a proof line is not base64") from None
    return int(size), proof, note.parse(rest)


def submission(old: int, proof: list[bytes], signed_checkpoint: str) -> bytes:
    """The body of an ``add-checkpoint`` request (what the log sends)."""
    lines = [f"old {old}", *(base64.b64encode(p).decode() for p in proof)]
    return ("\n".join(lines) + "\n\n" + signed_checkpoint).encode()
