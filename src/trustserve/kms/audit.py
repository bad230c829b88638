"""The audit log: one JSON line per release or refusal, each chained to the one before.

Every line carries ``seq`` (1, 2, ...) and ``prev``, the SHA-256 (hex) of the
previous line's exact bytes (64 zeros for the first). After each append the
KMS signs the head, ``{"seq", "sha256"}`` of the last line, with its Ed25519
identity key into ``audit.head.json``; so an edited, inserted or removed line,
anywhere including at the end, is found by ``verify`` with only the public key.
A rollback of log and head together to an earlier signed state is not
detectable from the files alone (compare ``seq`` with an external copy).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustserve import files
from trustserve.kms.state import file_lock

GENESIS = "0" * 64
MAX_FIELD_CHARS = 200  # a longer string is kept as its start, its length and its SHA-256
MAX_FIELD_ITEMS = 64  # a longer list keeps its first items and says how many there were


def bounded(value: Any) -> Any:
    """``value`` with every string and list cut to a fixed size (requesters choose many fields;
    a refusal must not let them write megabytes into the log), nested in lists and dicts."""
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        digest = hashlib.sha256(value.encode(errors="surrogatepass")).hexdigest()
        return f"{value[:64]}... ({len(value)} chars, sha256 {digest})"
    if isinstance(value, list | tuple):
        items = [bounded(v) for v in value[:MAX_FIELD_ITEMS]]
        if len(value) > MAX_FIELD_ITEMS:
            items.append(f"... {len(value)} items in all")
        return items
    if isinstance(value, dict):
        return {bounded(str(k)): bounded(v) for k, v in list(value.items())[:MAX_FIELD_ITEMS]}
    return value


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    lines: int
    problem: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.lines} lines"
        where = f"line {self.line}: " if self.line is not None else ""
        return f"audit log TAMPERED: {where}{self.problem}"


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _head_body(seq: int, sha256: str) -> bytes:
    return json.dumps({"seq": seq, "sha256": sha256}, sort_keys=True).encode()


class AuditLog:
    def __init__(self, directory: Path, signer: Ed25519PrivateKey) -> None:
        self.path = directory / "audit.jsonl"
        self.head_path = directory / "audit.head.json"
        self.lock_path = directory / "audit.lock"
        self._signer = signer

    def append(self, event: str, **fields: Any) -> None:
        """Append one event (fields must be JSON-serialisable and hold no secret); long
        strings and lists are cut (``bounded``)."""
        fields = {k: bounded(v) for k, v in fields.items()}
        with file_lock(self.lock_path):
            seq, prev = self._head()
            record = {"seq": seq + 1, "time": time.time(), "event": event, **fields, "prev": prev}
            line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            body = _head_body(seq + 1, _digest(line))
            head = {
                "seq": seq + 1,
                "sha256": _digest(line),
                "signature": base64.b64encode(self._signer.sign(body)).decode(),
            }
            files.write_secret(self.head_path, json.dumps(head).encode())

    def head(self) -> tuple[int, str]:
        """(seq, SHA-256 hex) of the last line; (0, GENESIS) for an empty log."""
        with file_lock(self.lock_path):
            return self._head()

    def _head(self) -> tuple[int, str]:
        if not self.head_path.exists():
            return 0, GENESIS
        head = json.loads(self.head_path.read_bytes())
        return int(head["seq"]), str(head["sha256"])


def verify(directory: Path, public_key: bytes) -> AuditReport:
    """Check the chain and the signed head; the report names the first bad line."""
    log_path, head_path = directory / "audit.jsonl", directory / "audit.head.json"
    data = log_path.read_bytes() if log_path.exists() else b""
    if data and not data.endswith(b"\n"):
        return AuditReport(False, 0, "the last line is incomplete (log truncated)")
    lines = data.split(b"\n")[:-1] if data else []
    prev = GENESIS
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            seq, link = record["seq"], record["prev"]
        except (ValueError, KeyError, TypeError):
            return AuditReport(False, len(lines), "not a valid audit record (edited)", number)
        if seq != number:
            return AuditReport(
                False,
                len(lines),
                f"sequence number {seq}, expected {number}: a line was inserted or removed here",
                number,
            )
        if link != prev:
            return AuditReport(
                False,
                len(lines),
                "changed after it was written (the next line's hash link does not match it)",
                number - 1,
            )
        prev = _digest(line)
    return _check_head(head_path, public_key, len(lines), prev)


def _check_head(path: Path, public_key: bytes, count: int, last: str) -> AuditReport:
    if not path.exists():
        if count == 0:
            return AuditReport(True, 0)
        return AuditReport(False, count, "the signed head (audit.head.json) is missing")
    try:
        head = json.loads(path.read_bytes())
        seq, sha, signature = int(head["seq"]), str(head["sha256"]), head["signature"]
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            base64.b64decode(signature), _head_body(seq, sha)
        )
    except InvalidSignature:
        return AuditReport(False, count, "the head is not signed by this KMS (head edited)")
    except (ValueError, KeyError, TypeError):
        return AuditReport(False, count, "the signed head is malformed")
    if seq > count:
        return AuditReport(
            False, count, f"the signed head records {seq} lines: lines removed from the end"
        )
    if seq < count:
        return AuditReport(False, count, "appended after the last signed line", seq + 1)
    if sha != last:
        return AuditReport(False, count, "changed after it was written (last line)", count)
    return AuditReport(True, count)
