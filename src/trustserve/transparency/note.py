"""Signed notes and checkpoints (C2SP ``signed-note``, ``tlog-checkpoint``, ``tlog-cosignature``).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <name> base64(key id || signature)``. A key is known by (name, key id); the key id is
``SHA-256(name || 0x0A || type || public key)[:4]`` with type 0x01 for a log's Ed25519
signature and 0x04 for a witness's timestamped Ed25519 cosignature, whose signed message is
``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint text. Signatures by unknown keys
are ignored; a signature by a known key that does not verify rejects the whole note.

A checkpoint's text is ``origin\\nsize\\nbase64(root)\\n``. Ed25519 comes from ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustserve.errors import TransparencyRefused

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 64
_DASH = "\u2014 "


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, kind: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A known key: its name, type (ED25519 or COSIGNATURE_V1) and Ed25519 public key."""

    name: str
    kind: int
    public: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.kind, _raw(self.public))

    def vkey(self) -> str:
        """The ``name+hex(id)+base64(type || key)`` text form."""
        material = base64.b64encode(bytes([self.kind]) + _raw(self.public)).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def from_vkey(cls, text: str) -> Verifier:
        name, sep, rest = text.strip().partition("+")
        hex_id, sep2, material = rest.partition("+")
        try:
            raw = base64.b64decode(material, validate=True)
            wanted = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise TransparencyRefused(f"not a verifier key: {text[:80]!r}") from None
        if not (name and sep and sep2) or len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise TransparencyRefused(f"not an Ed25519 verifier key: {text[:80]!r}")
        verifier = cls(name, raw[0], Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != wanted:
            raise TransparencyRefused(f"verifier key {name}: the key id does not match the key")
        return verifier


@dataclass(frozen=True)
class Signer:
    name: str
    kind: int
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.kind, self.private.public_key())


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (name, key id, signature bytes)

    def render(self) -> str:
        return self.text + "\n" + "".join(signature_line(*s) for s in self.signatures)


def signature_line(name: str, kid: bytes, signature: bytes) -> str:
    return f"{_DASH}{name} {base64.b64encode(kid + signature).decode()}\n"


def parse(data: str | bytes) -> Note:
    """A signed note's text and signature lines, checked for form only."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_NOTE_BYTES:
        raise TransparencyRefused(f"a signed note of {len(raw)} bytes is over {MAX_NOTE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TransparencyRefused("a signed note is not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise TransparencyRefused("a signed note holds a control character")
    body, sep, sigs = text.rpartition("\n\n")
    if not sep or not body or not sigs.endswith("\n"):
        raise TransparencyRefused("not a signed note: no blank line before the signatures")
    signatures = []
    for line in sigs[:-1].split("\n"):
        name, space, encoded = line.removeprefix(_DASH).partition(" ")
        if not line.startswith(_DASH) or not space or not name:
            raise TransparencyRefused(f"not a signature line: {line[:80]!r}")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise TransparencyRefused(f"signature by {name[:80]} is not base64") from None
        if len(blob) < 5:
            raise TransparencyRefused(f"signature by {name[:80]} is too short")
        signatures.append((name, blob[:4], blob[4:]))
    if len(signatures) > MAX_SIGNATURES:
        raise TransparencyRefused(f"{len(signatures)} signatures is over {MAX_SIGNATURES}")
    return Note(body + "\n", tuple(signatures))


def _message(verifier: Verifier, text: str, signature: bytes) -> tuple[bytes, bytes]:
    """(signed message, raw Ed25519 signature) for a signature of ``verifier``'s type."""
    if verifier.kind == ED25519:
        return text.encode(), signature
    if len(signature) != 8 + 64:
        raise TransparencyRefused(f"cosignature by {verifier.name} is not timestamp + Ed25519")
    (timestamp,) = struct.unpack(">Q", signature[:8])
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode(), signature[8:]


def sign(note_text: str, signer: Signer, timestamp: int | None = None) -> tuple[str, bytes, bytes]:
    """One signature line's parts for ``note_text`` (a cosignature needs ``timestamp``)."""
    if signer.kind == ED25519:
        return signer.name, signer.verifier.key_id, signer.private.sign(note_text.encode())
    if timestamp is None or not 0 <= timestamp < 2**63:
        raise ValueError("a cosignature needs a timestamp in 0..2^63-1")
    stamp = struct.pack(">Q", timestamp)
    message = f"cosignature/v1\ntime {timestamp}\n{note_text}".encode()
    return signer.name, signer.verifier.key_id, stamp + signer.private.sign(message)


def verified_by(note: Note, verifiers: list[Verifier]) -> list[Verifier]:
    """The known keys whose signatures on ``note`` verify; a bad one rejects the note."""
    good: list[Verifier] = []
    for name, kid, signature in note.signatures:
        for verifier in verifiers:
            if verifier.name != name or verifier.key_id != kid:
                continue
            message, raw = _message(verifier, note.text, signature)
            try:
                verifier.public.verify(raw, message)
            except InvalidSignature:
                raise TransparencyRefused(f"the signature by {name} does not verify") from None
            if verifier not in good:
                good.append(verifier)
    return good


def cosignature_time(note: Note, verifier: Verifier) -> int | None:
    """The timestamp in ``verifier``'s cosignature on ``note`` (None if it did not cosign)."""
    for name, kid, signature in note.signatures:
        if name == verifier.name and kid == verifier.key_id and len(signature) == 72:
            value: int = struct.unpack(">Q", signature[:8])[0]
            return value
    return None


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise TransparencyRefused("a checkpoint is origin, size and root on their own lines")
        origin, size, root = lines[0], lines[1], lines[2]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise TransparencyRefused(f"checkpoint size {size[:40]!r} is not a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise TransparencyRefused("checkpoint root is not base64") from None
        if len(digest) != 32:
            raise TransparencyRefused("checkpoint root is not a SHA-256 hash")
        return cls(origin, int(size), digest)
