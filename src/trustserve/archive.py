"""Model archives: a public manifest in a clear header, then the model bytes.

Layout of a ``.tsm`` file::

    MAGIC (8 bytes) | header length (4 bytes, big endian) | header JSON | payload

The header holds the manifest (name, version, tensors, batching,
preprocessing, labels) and, for an encrypted archive, the encryption scheme
and key id. The payload is the ONNX model, or its ciphertext; an encrypted
payload is bound to ``header_bytes`` (the exact prefix) as associated data, so
the public metadata cannot be changed either.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trustserve.errors import ArchiveError

MAGIC = b"TSMODEL\x01"
_LEN = struct.Struct(">I")
MAX_HEADER = 4 * 1024 * 1024
MAX_BATCH_SIZE = 1024  # rows per engine run, the most a manifest may allow
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor; ``-1`` in ``shape`` is a free dimension (the batch one first)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ImagePreprocessing:
    """Decode JPEG/PNG, resize the short side, center-crop, scale to [0,1], normalize."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 16
    max_batch_delay_ms: float = 5.0
    preprocessing: ImagePreprocessing | None = None
    labels: tuple[str, ...] | None = None
    platform: str = "onnx"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "platform": self.platform,
            "description": self.description,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "max_batch_size": self.max_batch_size,
            "max_batch_delay_ms": self.max_batch_delay_ms,
            "preprocessing": asdict(self.preprocessing) if self.preprocessing else None,
            "labels": list(self.labels) if self.labels is not None else None,
        }
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Manifest:
        """Validate a manifest; every problem found is reported at once."""
        problems: list[str] = []
        if not isinstance(raw, dict):
            raise ArchiveError("manifest must be a JSON object")
        name = raw.get("name")
        version = str(raw.get("version", ""))
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.append(f"name {name!r} must match {NAME_RE.pattern}")
        if not NAME_RE.match(version):
            problems.append(f"version {version!r} must match {NAME_RE.pattern}")
        inputs = _tensors(raw.get("inputs"), "inputs", problems)
        outputs = _tensors(raw.get("outputs"), "outputs", problems)
        mbs = raw.get("max_batch_size", 16)
        if not isinstance(mbs, int) or isinstance(mbs, bool) or not 1 <= mbs <= MAX_BATCH_SIZE:
            problems.append(f"max_batch_size must be an integer from 1 to {MAX_BATCH_SIZE}")
        delay = raw.get("max_batch_delay_ms", 5.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 10000:
            problems.append("max_batch_delay_ms must be a number from 0 to 10000")
        pre = _preprocessing(raw.get("preprocessing"), problems)
        labels = raw.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
        ):
            problems.append("labels must be a list of strings")
        elif labels is not None and outputs and outputs[0].shape and outputs[0].shape[-1] > 0:
            classes = outputs[0].shape[-1]
            if len(labels) != classes:
                problems.append(
                    f"{len(labels)} labels for {classes} classes: output "
                    f"'{outputs[0].name}' has {classes} values per instance"
                )
        if raw.get("platform", "onnx") not in ("onnx", "openvino"):
            problems.append("platform must be 'onnx' or 'openvino'")
        if problems:
            raise ArchiveError("invalid manifest: " + "; ".join(problems))
        extra = raw.get("extra") or {}
        return cls(
            name=str(name),
            version=version,
            inputs=inputs,
            outputs=outputs,
            max_batch_size=int(mbs),
            max_batch_delay_ms=float(delay),
            preprocessing=pre,
            labels=tuple(labels) if labels is not None else None,
            platform=str(raw.get("platform", "onnx")),
            description=str(raw.get("description", "")),
            extra=dict(extra) if isinstance(extra, dict) else {},
        )


def _tensors(raw: Any, what: str, problems: list[str]) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{what} must be a non-empty list")
        return ()
    specs: list[TensorSpec] = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            problems.append(f"{what}[{i}] must be an object")
            continue
        name, dtype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not name:
            problems.append(f"{what}[{i}].name must be a non-empty string")
        if dtype not in DATATYPES:
            problems.append(f"{what}[{i}].datatype {dtype!r} is not one of {sorted(DATATYPES)}")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)
        ):
            problems.append(f"{what}[{i}].shape must be a list of integers >= -1")
            shape = []
        specs.append(TensorSpec(str(name), str(dtype), tuple(shape)))
    return tuple(specs)


def _preprocessing(raw: Any, problems: list[str]) -> ImagePreprocessing | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append("preprocessing must be an object or null")
        return None
    try:
        pre = ImagePreprocessing(
            resize=int(raw.get("resize", 256)),
            crop=int(raw.get("crop", 224)),
            mean=_triple(raw.get("mean", (0.485, 0.456, 0.406))),
            std=_triple(raw.get("std", (0.229, 0.224, 0.225))),
        )
    except (TypeError, ValueError) as exc:
        problems.append(f"preprocessing: {exc}")
        return None
    if pre.crop < 1 or pre.resize < pre.crop:
        problems.append("preprocessing needs 1 <= crop <= resize")
    if any(s <= 0 for s in pre.std):
        problems.append("preprocessing std must be positive")
    return pre


def _triple(v: Any) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in v)
    return (a, b, c)


@dataclass(frozen=True)
class ModelArchive:
    """A parsed archive: the manifest, how the payload is protected, and the payload."""

    manifest: Manifest
    encryption: dict[str, Any] | None
    header_bytes: bytes
    payload: bytes

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None


def encode_header(manifest: Manifest, encryption: dict[str, Any] | None = None) -> bytes:
    """The exact archive prefix (magic, length, header JSON) for a manifest."""
    body = json.dumps(
        {"manifest": manifest.to_json(), "encryption": encryption},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return MAGIC + _LEN.pack(len(body)) + body


def pack(manifest: Manifest, payload: bytes, encryption: dict[str, Any] | None = None) -> bytes:
    return encode_header(manifest, encryption) + payload


def parse(data: bytes) -> ModelArchive:
    header_bytes, header = _split_header(data)
    manifest = Manifest.from_json(header.get("manifest"))
    encryption = header.get("encryption")
    if encryption is not None and not isinstance(encryption, dict):
        raise ArchiveError("archive header: encryption must be an object or null")
    payload = data[len(header_bytes) :]
    if not payload:
        raise ArchiveError("archive has no model payload (truncated?)")
    return ModelArchive(manifest, encryption, header_bytes, payload)


def read_header(path: Path) -> ModelArchive:
    """Read only the public header of an archive (the payload is left empty)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(MAGIC) + _LEN.size)
            if len(head) < len(MAGIC) + _LEN.size:
                raise ArchiveError(f"{path.name}: not a trustserve model archive (too short)")
            (length,) = _LEN.unpack(head[len(MAGIC) :])
            data = head + f.read(min(length, MAX_HEADER))
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {path}: {exc.strerror}") from None
    header_bytes, header = _split_header(data)
    manifest = Manifest.from_json(header.get("manifest"))
    return ModelArchive(manifest, header.get("encryption"), header_bytes, b"")


def _split_header(data: bytes) -> tuple[bytes, dict[str, Any]]:
    if not data.startswith(MAGIC):
        raise ArchiveError("not a trustserve model archive (bad magic)")
    if len(data) < len(MAGIC) + _LEN.size:
        raise ArchiveError("archive truncated in its header")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    if length > MAX_HEADER:
        raise ArchiveError("archive header is too large")
    end = len(MAGIC) + _LEN.size + length
    if len(data) < end:
        raise ArchiveError("archive truncated in its header")
    try:
        header = json.loads(data[len(MAGIC) + _LEN.size : end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"archive header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ArchiveError("archive header must be a JSON object")
    return data[:end], header


def load(path: Path) -> ModelArchive:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {path.name}: {exc.strerror}") from None
    return parse(data)
