"""v2 tensors, JSON and binary: exact round trips; anything else is InvalidInput (400).

Floats are finite here: JSON has no NaN or infinity (orjson writes null), so only binary
tensor data carries them exactly (``test_binary_keeps_nan_and_infinity``).
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.properties.own_errors import json_values, refused_cleanly
from tests.support import tiny_manifest
from trustserve.archive import DATATYPES
from trustserve.tensors import Tensor, encode_tensors, parse_request, parse_response

MANIFEST = tiny_manifest()


@st.composite
def tensors(draw: st.DrawFn) -> list[Tensor]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(list(DATATYPES)))
        dtype = np.dtype(DATATYPES[name])
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
        data = draw(
            hnp.arrays(
                dtype,
                shape,
                elements={"allow_nan": False, "allow_infinity": False}
                if dtype.kind == "f"
                else None,
            )
        )
        out.append(Tensor(f"t{i}", name, shape, data))
    return out


@given(tensors(), st.data())
def test_response_round_trip_is_exact(ts: list[Tensor], data: st.DataObject) -> None:
    binary = {t.name: data.draw(st.booleans()) for t in ts}
    body, head_len = encode_tensors({"model_name": "m"}, "outputs", ts, binary)
    _, back = parse_response(body, head_len)
    assert [(t.name, t.datatype, t.shape) for t in back] == [
        (t.name, t.datatype, t.shape) for t in ts
    ]
    for a, b in zip(ts, back, strict=True):
        assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)


@given(tensors())
def test_request_round_trip_is_exact(ts: list[Tensor]) -> None:
    body, head_len = encode_tensors({"id": "r"}, "inputs", ts, {t.name: True for t in ts})
    request = parse_request(body, str(head_len))
    assert request.id == "r" and request.all_binary
    for a, b in zip(ts, request.inputs, strict=True):
        assert a.shape == b.shape and np.array_equal(a.data, b.data)


@given(st.binary(max_size=300), st.none() | st.text(max_size=12))
def test_any_bytes_are_a_request_or_invalid_input(body: bytes, header_length: str | None) -> None:
    refused_cleanly(lambda: parse_request(body, header_length))
    refused_cleanly(lambda: parse_request(body, header_length, MANIFEST))


@given(json_values)
def test_any_json_is_a_request_or_invalid_input(value: object) -> None:
    body = json.dumps(value).encode()
    refused_cleanly(lambda: parse_request(body, None, MANIFEST))
    refused_cleanly(lambda: parse_response(body, None))


@given(
    st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=10),
    st.sampled_from(list(DATATYPES)),
    st.booleans(),
    st.lists(json_values, max_size=4),
)
def test_any_shape_and_data_is_a_request_or_invalid_input(
    shape: list[int], datatype: str, binary: bool, data: list[object]
) -> None:
    entry: dict[str, object] = {"name": "x", "datatype": datatype, "shape": shape}
    if binary:
        entry["parameters"] = {"binary_data_size": 0}
        head = json.dumps({"inputs": [entry]}).encode()
        refused_cleanly(lambda: parse_request(head, str(len(head))))
    else:
        entry["data"] = data
        refused_cleanly(lambda: parse_request(json.dumps({"inputs": [entry]}).encode(), None))


@given(hnp.arrays(np.float32, st.integers(1, 6)))
def test_binary_keeps_nan_and_infinity(array: np.ndarray) -> None:
    t = Tensor("y", "FP32", array.shape, array)
    body, head_len = encode_tensors({}, "outputs", [t], {"y": True})
    _, (back,) = parse_response(body, head_len)
    assert back.data.tobytes() == array.tobytes()
