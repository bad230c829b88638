"""Packing an ONNX model with its manifest, after checking that they describe the same tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import yaml
from onnx import helper

from trustserve import archive
from trustserve.archive import Manifest, TensorSpec
from trustserve.errors import ArchiveError

_DATATYPE_OF_NUMPY = {v: k for k, v in archive.DATATYPES.items()}


def load_manifest(path: Path) -> Manifest:
    """A manifest from a JSON or YAML file (by suffix), or the header of a ``.tsm`` archive."""
    if path.suffix == ".tsm":
        return archive.read_header(path).manifest
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"cannot read manifest {path.name}: {exc}") from None
    raw: Any
    try:
        raw = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"manifest {path.name} does not parse: {exc}") from None
    return Manifest.from_json(raw)


def onnx_tensors(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec], list[str]]:
    """The model's graph inputs and outputs as tensor specs, and the tensors we cannot describe."""
    initializers = {i.name for i in model.graph.initializer}
    problems: list[str] = []

    def spec(value: onnx.ValueInfoProto, what: str) -> TensorSpec:
        tensor = value.type.tensor_type
        datatype = "?"
        if not value.type.HasField("tensor_type"):
            problems.append(f"model {what} {value.name!r} is not a tensor")
        else:
            try:
                numpy_name = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            except (KeyError, ValueError, TypeError):
                numpy_name = "?"
            datatype = _DATATYPE_OF_NUMPY.get(numpy_name, "?")
            if datatype == "?":
                elem = helper.tensor_dtype_to_string(tensor.elem_type)
                problems.append(f"model {what} {value.name!r} has unsupported type {elem}")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, datatype, dims)

    inputs = [spec(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v, "output") for v in model.graph.output]
    return inputs, outputs, problems


def mismatches(model: onnx.ModelProto, manifest: Manifest) -> list[str]:
    """Every way the manifest's inputs/outputs differ from the model's (empty when they match)."""
    inputs, outputs, problems = onnx_tensors(model)
    problems += _compare("input", inputs, manifest.inputs)
    problems += _compare("output", outputs, manifest.outputs)
    return problems


def _compare(what: str, model: list[TensorSpec], declared: tuple[TensorSpec, ...]) -> list[str]:
    problems: list[str] = []
    by_name = {t.name: t for t in model}
    declared_names = {t.name for t in declared}
    for t in declared:
        actual = by_name.get(t.name)
        if actual is None:
            problems.append(
                f"manifest {what} {t.name!r} is not a model {what} "
                f"(the model's {what}s: {sorted(by_name)})"
            )
            continue
        if actual.datatype not in ("?", t.datatype):
            problems.append(
                f"{what} {t.name!r}: manifest says {t.datatype}, the model has {actual.datatype}"
            )
        if actual.shape and not _shapes_agree(actual.shape, t.shape):
            problems.append(
                f"{what} {t.name!r}: manifest shape {list(t.shape)} does not fit the model's "
                f"{list(actual.shape)} (-1: any size)"
            )
    for name in sorted(set(by_name) - declared_names):
        problems.append(f"model {what} {name!r} is missing from the manifest")
    return problems


def _shapes_agree(model: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(model) == len(declared) and all(
        m == -1 or d == -1 or m == d for m, d in zip(model, declared, strict=True)
    )


def pack_model(model_bytes: bytes, manifest: Manifest) -> bytes:
    """The archive bytes for a model, or an ``ArchiveError`` naming every mismatch."""
    if manifest.platform != "onnx":
        raise ArchiveError(f"cannot pack an ONNX model under platform {manifest.platform!r}")
    try:
        model = onnx.load_from_string(model_bytes)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError and more
        raise ArchiveError(f"not a valid ONNX model: {str(exc).splitlines()[0]}") from None
    problems = mismatches(model, manifest)
    if problems:
        raise ArchiveError("manifest does not match the model: " + "; ".join(problems))
    return archive.pack(manifest, model_bytes)
