"""TorchServe ``.mar`` archives in: the model to ONNX, the handler's behaviour to the manifest.

A ``.mar`` is a zip with ``MAR-INF/MANIFEST.json`` (``model.modelName``,
``model.modelVersion``, ``model.serializedFile``, ``model.handler`` and, for an
eager model, ``model.modelFile``). What is imported:

* the model: TorchScript (no ``modelFile``), or eager (a ``modelFile`` with
  exactly one ``torch.nn.Module`` class and a state dict as ``serializedFile``);
* the handler: only TorchServe's stock ``image_classifier``, whose
  preprocessing (resize 256, center crop 224, ImageNet mean/std) becomes the
  manifest's, and whose answer (softmax, top 5 labels) trustserve's
  ``/predictions`` endpoint already gives;
* the labels: ``index_to_name.json`` (``{"0": "tench"}`` or
  ``{"0": ["n01440764", "tench"]}``).

Converting either kind runs the archive's program: an eager model's Python file,
or the TorchScript program (whose ``__setstate__`` methods run while torch loads
it, and whose ``forward`` the export runs). So nothing in the archive is loaded,
unpickled or run unless ``trust_code=True`` (``--trust-model-code``), and then
only in the sandboxed child of :mod:`trustserve.models.convert`, with TorchScript
ops checked against a tensor-math allowlist first. This process only reads the
zip. Nothing in the archive is extracted to disk under its own name.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustserve.archive import ImagePreprocessing, Manifest
from trustserve.errors import ArchiveError
from trustserve.models import torch_import
from trustserve.models.convert import convert
from trustserve.models.packing import pack_model

MAR_MANIFEST = "MAR-INF/MANIFEST.json"
LABELS_FILE = "index_to_name.json"
STOCK_CLASSIFIER = ("image_classifier", "ts.torch_handler.image_classifier")
MAX_SMALL = 16 * 1024 * 1024  # manifest, labels, model source
MAX_WEIGHTS = 4 * 1024 * 1024 * 1024
IMAGE_SHAPE = torch_import.IMAGE_SHAPE


@dataclass(frozen=True)
class MarContents:
    name: str
    version: str
    handler: str
    serialized: bytes
    model_source: bytes | None  # the eager model's Python source; None for TorchScript
    labels: tuple[str, ...] | None

    @property
    def kind(self) -> str:
        return "torchscript" if self.model_source is None else "eager"


def read_mar(path: Path) -> MarContents:
    """What an import needs from a ``.mar``; anything unsupported is an error that says what."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a zip archive"
        raise ArchiveError(f"cannot read {path.name}: {reason} (a .mar is a zip)") from None
    with zf:
        raw = _json(zf, MAR_MANIFEST, path.name)
        model = raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(model, dict):
            raise ArchiveError(f"{path.name}: {MAR_MANIFEST} has no 'model' object")
        runtime = str(raw.get("runtime", "python"))
        if runtime.lower() not in ("python", "python3"):
            raise ArchiveError(f"{path.name}: runtime {runtime!r} is not supported (only python)")
        if model.get("workflowName"):
            raise ArchiveError(f"{path.name}: workflow archives are not supported")
        handler = _field(model, "handler", path.name)
        serialized_name = _field(model, "serializedFile", path.name)
        model_file = model.get("modelFile") or None
        _check_handler(handler, zf, path.name)
        serialized = _read(zf, serialized_name, MAX_WEIGHTS, path.name)
        source = _read(zf, str(model_file), MAX_SMALL, path.name) if model_file else None
        labels = _labels(zf, path.name) if LABELS_FILE in zf.namelist() else None
        return MarContents(
            name=_field(model, "modelName", path.name),
            version=str(model.get("modelVersion") or "1"),
            handler=handler,
            serialized=serialized,
            model_source=source,
            labels=labels,
        )


def import_mar(
    path: Path,
    *,
    trust_code: bool = False,
    manifest: Manifest | None = None,
    name: str | None = None,
    version: str | None = None,
    sandbox: bool = True,
) -> tuple[bytes, Manifest, torch_import.Exported]:
    """The ``.tsm`` bytes, the manifest used, and the export's check against torch.

    Without ``trust_code`` only the zip is read and the import is refused;
    ``sandbox=False`` (insecure, for systems with no sandbox) converts unconfined.
    """
    mar = read_mar(path)
    if not trust_code:
        torch_import.refuse_untrusted(path.name, mar.kind)
    what = f"{path.name}'s serialized file"
    done = convert(
        mar.serialized,
        what,
        manifest=None if manifest is None else manifest.to_json(),
        model_source=mar.model_source,
        sandbox=sandbox,
    )
    if manifest is None:
        assert done.classes is not None
        manifest = _classifier_manifest(mar, done.classes, name, version, path.name)
    manifest = _complete(manifest, mar, name, version)
    exported = torch_import.Exported(done.onnx_bytes, done.max_abs_diff)
    return pack_model(exported.onnx_bytes, manifest), manifest, exported


def _classifier_manifest(
    mar: MarContents, classes: int, name: str | None, version: str | None, what: str
) -> Manifest:
    """The stock image classifier's tensors: images in, one row of class scores out."""
    return _manifest(
        {
            "name": name or mar.name,
            "version": version or mar.version,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(IMAGE_SHAPE)}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, classes]}],
            "labels": list(mar.labels) if mar.labels else [str(i) for i in range(classes)],
        },
        what,
    )


def _complete(m: Manifest, mar: MarContents, name: str | None, version: str | None) -> Manifest:
    """The stock handler's preprocessing and the archive's labels, unless the manifest has them."""
    raw = m.to_json()
    raw["name"] = name or raw["name"]
    raw["version"] = version or raw["version"]
    if raw.get("preprocessing") is None:
        pre = ImagePreprocessing()  # the stock image_classifier's: 256, 224, ImageNet
        raw["preprocessing"] = {"resize": pre.resize, "crop": pre.crop, "mean": pre.mean,
                                "std": pre.std}  # fmt: skip
    if raw.get("labels") is None and mar.labels is not None:
        raw["labels"] = list(mar.labels)
    raw["description"] = raw.get("description") or f"imported from TorchServe {mar.name}.mar"
    extra = dict(raw.get("extra") or {})
    extra.update({"source": "torchserve-mar", "mar_handler": mar.handler, "mar_model": mar.kind})
    raw["extra"] = extra
    return _manifest(raw, "the imported manifest")


def _manifest(raw: dict[str, Any], what: str) -> Manifest:
    try:
        return Manifest.from_json(raw)
    except ArchiveError as exc:
        raise ArchiveError(f"{what}: {exc} (override with --name/--version/--manifest)") from None


def _check_handler(handler: str, zf: zipfile.ZipFile, what: str) -> None:
    if handler in STOCK_CLASSIFIER:
        return
    custom = handler.split(":")[0]
    where = " (a Python file in the archive)" if custom in zf.namelist() else ""
    raise ArchiveError(
        f"{what}: handler {handler!r}{where} is not supported: only TorchServe's stock "
        "'image_classifier' is, because a handler's Python pre- and post-processing cannot "
        "run in trustserve's worker. For another TorchScript model, take its .pt out of the "
        "archive and use `trustserve model pack --from-torch MODEL.pt --manifest ...`"
    )


def _field(model: dict[str, Any], key: str, what: str) -> str:
    value = model.get(key)
    if not isinstance(value, str) or not value:
        raise ArchiveError(f"{what}: {MAR_MANIFEST} has no model.{key}")
    return value


def _read(zf: zipfile.ZipFile, name: str, limit: int, what: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ArchiveError(f"{what}: the archive has no {name!r}") from None
    if info.file_size > limit:
        raise ArchiveError(f"{what}: {name!r} is over {limit} bytes")
    with zf.open(info) as f:
        data = f.read(limit + 1)  # the size in the zip directory is the sender's claim
    if len(data) > limit:
        raise ArchiveError(f"{what}: {name!r} is over {limit} bytes")
    return data


def _json(zf: zipfile.ZipFile, name: str, what: str) -> Any:
    try:
        return json.loads(_read(zf, name, MAX_SMALL, what))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{what}: {name} does not parse: {exc}") from None


def _labels(zf: zipfile.ZipFile, what: str) -> tuple[str, ...]:
    raw = _json(zf, LABELS_FILE, what)
    if not isinstance(raw, dict) or not raw:
        raise ArchiveError(f"{what}: {LABELS_FILE} must be an object of index -> name")
    if sorted(raw) != sorted(str(i) for i in range(len(raw))):
        raise ArchiveError(f"{what}: {LABELS_FILE} keys must be 0 .. {len(raw) - 1}")
    labels = []
    for i in range(len(raw)):
        value = raw[str(i)]
        if isinstance(value, list) and value:  # ImageNet style: [wordnet id, name]
            value = value[-1]
        if not isinstance(value, str):
            raise ArchiveError(f"{what}: {LABELS_FILE} entry {i} is not a name")
        labels.append(value)
    return tuple(labels)
