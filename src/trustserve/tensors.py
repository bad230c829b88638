"""Open Inference Protocol v2 tensors: JSON and the binary tensor data extension.

A request or response body is a JSON header, optionally followed by raw tensor
bytes; ``Inference-Header-Content-Length`` says where the JSON ends. The same
binary encoding is what travels through the broker between frontend and worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from trustserve.archive import DATATYPES, Manifest, TensorSpec
from trustserve.errors import InvalidInput
from trustserve.tensor_bytes import BYTES, bytes_data, bytes_elements

Array = npt.NDArray[Any]
MAX_RANK = 8
MAX_ELEMENTS = 2**31  # per tensor, counting a 0 dimension as 1 (numpy refuses such shapes)
JSON_SLACK_VALUES = 4096  # JSON values a request may carry besides its tensor elements
_DTYPES = {k: np.dtype(v) for k, v in DATATYPES.items()}
_NAMES = {v: k for k, v in _DTYPES.items()}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    binary_output_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    all_binary: bool = False  # every input came as binary data: the body can travel as it is


def datatype_of(array: Array) -> str:
    if array.dtype == object:
        return BYTES
    try:
        return _NAMES[array.dtype]
    except KeyError:
        raise InvalidInput(f"unsupported tensor dtype {array.dtype}") from None


def _json(data: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """The JSON header and the binary tail of a body."""
    view = memoryview(body)
    if header_length is None:
        return _json(view, "request body"), view[len(view) :]
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput("Inference-Header-Content-Length must be an integer") from None
    if not 0 < n <= len(view):
        raise InvalidInput(
            f"Inference-Header-Content-Length {n} does not fit the body of {len(view)} bytes"
        )
    return _json(view[:n], "inference header"), view[n:]


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers")
    check_shape_limits(tuple(raw), where)
    return tuple(raw)


def check_shape_limits(shape: tuple[int, ...], where: str) -> None:
    """The limits every request has, whatever its model: at most ``MAX_RANK`` dimensions
    and ``MAX_ELEMENTS`` elements (a 0 dimension counted as 1: numpy cannot even reshape
    an empty buffer to a shape whose other dimensions overflow)."""
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"{where}: shape has {len(shape)} dimensions, at most {MAX_RANK}")
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        raise InvalidInput(f"{where}: shape {list(shape)} is over the {MAX_ELEMENTS}-element limit")


def check_input_header(
    name: str, dtype_name: str, shape: tuple[int, ...], manifest: Manifest
) -> None:
    """The limits and what the manifest allows, checked from the header before any data
    is converted."""
    check_shape_limits(shape, f"inputs '{name}'")
    spec = next((s for s in manifest.inputs if s.name == name), None)
    if spec is None:
        names = sorted(s.name for s in manifest.inputs)
        raise InvalidInput(f"unknown input(s) ['{name}']; model '{manifest.name}' takes {names}")
    _check_type_and_shape(name, dtype_name, shape, spec, manifest)
    if shape and not 1 <= shape[0] <= manifest.max_batch_size:
        raise InvalidInput(f"batch size {shape[0]} is outside 1..{manifest.max_batch_size}")


def json_value_budget(manifest: Manifest) -> int | None:
    """How many JSON values a request for ``manifest`` can need (None: a free dimension
    other than the batch makes it unbounded)."""
    total = JSON_SLACK_VALUES
    for spec in manifest.inputs:
        if any(d < 0 for d in spec.shape[1:]):
            return None
        total += manifest.max_batch_size * math.prod(spec.shape[1:])
    return total


def _tensors(
    items: Any, binary: memoryview, where: str, manifest: Manifest | None = None
) -> tuple[list[Tensor], int]:
    if not isinstance(items, list):
        raise InvalidInput(f"'{where}' must be a list")
    offset = 0
    out: list[Tensor] = []
    for i, raw in enumerate(items):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput(f"{where}[{i}] must be an object with a string 'name'")
        name = raw["name"]
        dtype_name = raw.get("datatype")
        if dtype_name not in _DTYPES and dtype_name != BYTES:
            raise InvalidInput(f"{where} '{name}': datatype {dtype_name!r} is not supported")
        dtype = _DTYPES.get(dtype_name, np.dtype(object))
        shape = _shape(raw.get("shape"), f"{where} '{name}'")
        if manifest is not None:
            check_input_header(name, dtype_name, shape, manifest)
        count = math.prod(shape)
        params = raw.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"{where} '{name}': parameters must be an object")
        size = params.get("binary_data_size")
        if dtype_name == BYTES:
            if not isinstance(size, int) or not 0 <= size <= len(binary) - offset:
                raise InvalidInput(
                    f"{where} '{name}': BYTES go as binary data, with a binary_data_size "
                    f"within the {len(binary) - offset} bytes after the JSON"
                )
            array = bytes_elements(binary[offset : offset + size], shape, f"{where} '{name}'")
            offset += size
        elif size is not None:
            if not isinstance(size, int) or size < 0:
                raise InvalidInput(f"{where} '{name}': binary_data_size must be an integer")
            if size != count * dtype.itemsize:
                raise InvalidInput(
                    f"{where} '{name}': binary_data_size {size} does not match shape "
                    f"{list(shape)} of {dtype_name} ({count * dtype.itemsize} bytes)"
                )
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{where} '{name}': binary data ends after {len(binary)} bytes, "
                    f"{offset + size} needed"
                )
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
            offset += size
        elif "data" in raw:
            array = array_from_values(raw["data"], dtype, shape, f"{where} '{name}'")
        else:
            raise InvalidInput(f"{where} '{name}' has neither 'data' nor binary_data_size")
        out.append(Tensor(name, dtype_name, shape, array))
    return out, offset


def array_from_values(data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], where: str) -> Array:
    """Tensor elements given as values (a JSON list, a protobuf repeated field) as an array
    of ``dtype`` and ``shape``; a value the datatype cannot hold is an error, not a wrap."""
    try:
        with np.errstate(over="raise", invalid="raise"):  # 1e300 is no FP32 value
            array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, ArithmeticError):
        raise InvalidInput(f"{where}: data does not hold {dtype} values") from None
    if array.size != math.prod(shape):
        raise InvalidInput(
            f"{where}: data has {array.size} elements but shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    return array.reshape(shape)


def _check_budget(body: bytes, header_length: str | None, manifest: Manifest) -> None:
    """Refuse a JSON part with more values than the model could take, before parsing it:
    a value needs a separator, and counting separators costs a scan, not a parse."""
    budget = json_value_budget(manifest)
    if budget is None:
        return
    head = body
    if header_length is not None:
        try:
            head = body[: max(int(header_length), 0)]  # binary data after it is not JSON
        except ValueError:
            return  # split_body refuses the header length
    # a shared-memory view (local jobs read in place) has no count(): counted as bytes
    commas = head.count(b",") if isinstance(head, bytes) else bytes(head).count(b",")
    if commas > budget:
        raise InvalidInput(
            f"request holds more values than model '{manifest.name}' takes "
            f"(at most {manifest.max_batch_size} rows)"
        )


def parse_request(
    body: bytes, header_length: str | None, manifest: Manifest | None = None
) -> InferRequest:
    """The request in ``body``; with ``manifest``, its size, names, datatypes and shapes are
    checked against the model before the JSON is parsed or any tensor data is converted."""
    if manifest is not None:
        _check_budget(body, header_length, manifest)
    header, binary = split_body(body, header_length)
    if not isinstance(header, dict):
        raise InvalidInput("inference request must be a JSON object")
    inputs, used = _tensors(header.get("inputs"), binary, "inputs", manifest)
    if not inputs:
        raise InvalidInput("'inputs' must not be empty")
    all_binary = all("binary_data_size" in (i.get("parameters") or {}) for i in header["inputs"])
    if used != len(binary):
        raise InvalidInput(
            f"binary data is {len(binary)} bytes but the inputs account for {used} bytes"
        )
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object")
    default_binary = bool(params.get("binary_data_output", False))
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for raw in header["outputs"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise InvalidInput("each requested output must be an object with a 'name'")
            p = raw.get("parameters") or {}
            outputs.append(RequestedOutput(raw["name"], bool(p.get("binary_data", default_binary))))
    rid = header.get("id")
    return InferRequest(
        inputs, outputs, str(rid) if rid is not None else None, default_binary, params, all_binary
    )


def check_against(request: InferRequest, manifest: Manifest) -> None:
    """Every input the model needs, with its datatype and shape; nothing else."""
    specs = {s.name: s for s in manifest.inputs}
    given = {t.name for t in request.inputs}
    if unknown := given - specs.keys():
        raise InvalidInput(
            f"unknown input(s) {sorted(unknown)}; model '{manifest.name}' takes {sorted(specs)}"
        )
    if missing := specs.keys() - given:
        raise InvalidInput(f"missing input(s) {sorted(missing)} for model '{manifest.name}'")
    batch: int | None = None
    for t in request.inputs:
        _check_type_and_shape(t.name, t.datatype, t.shape, specs[t.name], manifest)
        if batch is not None and t.shape[0] != batch:
            raise InvalidInput("all inputs must have the same batch size")
        batch = t.shape[0]
    if batch is not None and not 1 <= batch <= manifest.max_batch_size:
        raise InvalidInput(f"batch size {batch} is outside 1..{manifest.max_batch_size}")
    if request.outputs:
        names = {s.name for s in manifest.outputs}
        for out in request.outputs:
            if out.name not in names:
                raise InvalidInput(f"unknown output '{out.name}'; model has {sorted(names)}")


def _check_type_and_shape(
    name: str, datatype: str, shape: tuple[int, ...], spec: TensorSpec, manifest: Manifest
) -> None:
    if datatype == BYTES and manifest.preprocessing is not None and len(manifest.inputs) == 1:
        if len(shape) not in (1, 2) or shape[1:] not in ((), (1,)):
            raise InvalidInput(
                f"input '{name}': BYTES shape {list(shape)} is not [N] or [N, 1] (N images)"
            )
        return
    if datatype != spec.datatype:
        takes = "" if datatype != BYTES else f" (model '{manifest.name}' takes no images)"
        raise InvalidInput(
            f"input '{name}': datatype {datatype} given, model expects {spec.datatype}{takes}"
        )
    _check_shape(name, shape, spec)


def _check_shape(name: str, shape: tuple[int, ...], spec: TensorSpec) -> None:
    ok = len(shape) == len(spec.shape) and all(
        s in (-1, d) for s, d in zip(spec.shape, shape, strict=True)
    )
    if not ok:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} does not match model shape "
            f"{list(spec.shape)} (-1 is any size)"
        )


def encode_binary(header: dict[str, Any], key: str, tensors: list[Tensor]) -> tuple[bytes, int]:
    """Header JSON with every tensor as binary data; returns (body, header length)."""
    body, head_len = encode_tensors(header, key, tensors, {t.name: True for t in tensors})
    assert head_len is not None
    return body, head_len


def as_binary_request(request: InferRequest) -> tuple[bytes, int]:
    """The same request with every input as binary data: its id, parameters and requested
    outputs (each JSON or binary) kept, so whoever reads it answers what the client asked."""
    header: dict[str, Any] = {"parameters": request.parameters}
    if request.id is not None:
        header["id"] = request.id
    if request.outputs is not None:
        header["outputs"] = [
            {"name": o.name, "parameters": {"binary_data": o.binary}} for o in request.outputs
        ]
    return encode_binary(header, "inputs", request.inputs)


def encode_response(
    header: dict[str, Any], tensors: list[Tensor], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """A v2 response: tensors named in ``binary`` with True go as binary data."""
    return encode_tensors(header, "outputs", tensors, binary)


def encode_tensors(
    header: dict[str, Any], key: str, tensors: list[Tensor], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """``header`` plus the tensors under ``key``, each as JSON data or as binary data after
    the JSON; returns the body and the header length (None when nothing is binary)."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for t in tensors:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if binary.get(t.name, False):
            array = np.ascontiguousarray(t.data)
            # a view, not a copy: the body below is the one copy of the tensor's bytes
            raw = (
                bytes_data(array)
                if array.dtype == object
                else array.reshape(-1).view(np.uint8).data
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = t.data.reshape(-1).tolist()
        entries.append(entry)
    head = orjson.dumps({**header, key: entries})
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def parse_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], list[Tensor]]:
    header, binary = split_body(body, None if header_length is None else str(header_length))
    if not isinstance(header, dict):
        raise InvalidInput("inference response must be a JSON object")
    tensors, _ = _tensors(header.get("outputs", []), binary, "outputs")
    return header, tensors
