"""Open Inference Protocol v2 tensors: round trips, and every way a request is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tests.support import tiny_manifest
from trustserve.archive import DATATYPES
from trustserve.errors import InvalidInput
from trustserve.tensors import (
    RequestedOutput,
    Tensor,
    as_binary_request,
    check_against,
    datatype_of,
    encode_binary,
    encode_response,
    parse_request,
    parse_response,
)


def tensor(name: str, array: np.ndarray) -> Tensor:
    return Tensor(name, datatype_of(array), tuple(array.shape), array)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_binary_round_trip_keeps_every_datatype_bit_for_bit(datatype: str) -> None:
    rng = np.random.default_rng()
    array = (rng.standard_normal((3, 5)) * 100).astype(DATATYPES[datatype])
    body, head_len = encode_binary({"id": "r1"}, "inputs", [tensor("a", array)])
    request = parse_request(body, str(head_len))
    (got,) = request.inputs
    assert (got.name, got.datatype, got.shape, request.id) == ("a", datatype, (3, 5), "r1")
    assert got.data.dtype == array.dtype and got.data.tobytes() == array.tobytes()
    assert request.all_binary


def test_json_and_binary_inputs_mix_in_one_request() -> None:
    b = np.arange(6, dtype=np.int32).reshape(2, 3)
    head = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]},
            {
                "name": "b",
                "datatype": "INT32",
                "shape": [2, 3],
                "parameters": {"binary_data_size": 24},
            },
        ]
    }
    raw = orjson.dumps(head)
    request = parse_request(raw + b.tobytes(), str(len(raw)))
    a, got_b = request.inputs
    np.testing.assert_array_equal(a.data, np.array([1.5, 2.5], np.float32))
    np.testing.assert_array_equal(got_b.data, b)
    assert not request.all_binary


def test_requested_outputs_and_binary_defaults() -> None:
    head = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}],
        "outputs": [{"name": "y"}, {"name": "s", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True},
    }
    request = parse_request(orjson.dumps(head), None)
    assert request.outputs == [RequestedOutput("y", True), RequestedOutput("s", False)]
    assert request.binary_output_default and request.id is None


def test_a_json_request_made_binary_keeps_what_it_asked_for() -> None:
    head = {
        "id": "r9",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "y"}, {"name": "s", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False, "priority": 1},
    }
    request = parse_request(orjson.dumps(head), None)
    body, head_len = as_binary_request(request)
    again = parse_request(body, str(head_len))
    assert again.all_binary and again.id == "r9"
    assert again.outputs == [RequestedOutput("y", False), RequestedOutput("s", True)]
    assert again.parameters == head["parameters"]
    np.testing.assert_array_equal(again.inputs[0].data, [[1, 2, 3, 4]])
    assert b"[1.0,2.0" not in body  # no JSON numbers left to parse


def test_response_round_trip_json_and_binary() -> None:
    y = np.arange(8, dtype=np.float32).reshape(2, 4)
    s = np.array([[6.0], [22.0]], np.float32)
    tensors = [tensor("y", y), tensor("s", s)]
    body, head_len = encode_response({"model_name": "m"}, tensors, {"y": True, "s": False})
    assert head_len is not None
    header, got = parse_response(body, head_len)
    assert header["model_name"] == "m"
    assert header["outputs"][1]["data"] == [6.0, 22.0]
    np.testing.assert_array_equal(got[0].data, y)
    np.testing.assert_array_equal(got[1].data, s)
    all_json, none = encode_response({}, tensors, {})
    assert none is None and orjson.loads(all_json)["outputs"][0]["data"] == list(range(8))


def test_an_unsupported_dtype_is_named() -> None:
    with pytest.raises(InvalidInput, match="complex64"):
        datatype_of(np.zeros(2, np.complex64))


def _input(**over: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4], **over}


def _request(*inputs: Any, **top: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **top})


@pytest.mark.parametrize(
    ("body", "header_length", "words"),
    [
        (b"{nope", None, "request body is not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (_request(), None, "'inputs' must not be empty"),
        (orjson.dumps({"inputs": {}}), None, "'inputs' must be a list"),
        (_request("x"), None, "inputs[0] must be an object with a string 'name'"),
        (_request({"name": 3}), None, "inputs[0] must be an object with a string 'name'"),
        (_request(_input(datatype="BF16")), None, "datatype 'BF16' is not supported"),
        (_request(_input(shape=[1, -4])), None, "shape must be a list of non-negative integers"),
        (_request(_input(shape=[1, True])), None, "shape must be a list of non-negative integers"),
        (_request(_input(shape="1x4")), None, "shape must be a list of non-negative integers"),
        (_request(_input(parameters=[1])), None, "parameters must be an object"),
        (_request(_input(data=[1, 2, 3])), None, "data has 3 elements but shape [1, 4] needs 4"),
        (_request(_input(data=["a", "b", "c", "d"])), None, "data does not hold float32 values"),
        (_request({"name": "x", "datatype": "FP32", "shape": [1]}), None, "neither 'data' nor"),
        (_request(_input(), parameters=[1]), None, "'parameters' must be an object"),
        (_request(_input(), outputs={}), None, "'outputs' must be a list"),
        (_request(_input(), outputs=[{"nom": "y"}]), None, "must be an object with a 'name'"),
        (_request(_input()), "x", "Inference-Header-Content-Length must be an integer"),
        (_request(_input()), "0", "does not fit the body"),
        (_request(_input()), "100000", "does not fit the body"),
    ],
)
def test_a_bad_request_is_refused_naming_what_is_wrong(
    body: bytes, header_length: str | None, words: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_request(body, header_length)
    assert words in str(refused.value)


def _binary(size: Any, tail: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    return head + tail, str(len(head))


@pytest.mark.parametrize(
    ("size", "tail", "words"),
    [
        (-1, b"", "binary_data_size must be an integer"),
        ("16", b"", "binary_data_size must be an integer"),
        (12, b"\0" * 12, "binary_data_size 12 does not match shape [1, 4] of FP32 (16 bytes)"),
        (16, b"\0" * 8, "binary data ends after 8 bytes, 16 needed"),
        (16, b"\0" * 20, "binary data is 20 bytes but the inputs account for 16 bytes"),
    ],
)
def test_bad_binary_data_is_refused(size: Any, tail: bytes, words: str) -> None:
    body, head_len = _binary(size, tail)
    with pytest.raises(InvalidInput) as refused:
        parse_request(body, head_len)
    assert words in str(refused.value)


def _checked(*inputs: Any, **top: Any) -> None:
    check_against(parse_request(_request(*inputs, **top), None), tiny_manifest())


def test_a_request_that_fits_the_manifest_passes() -> None:
    _checked(_input(), outputs=[{"name": "s"}])


@pytest.mark.parametrize(
    ("inputs", "top", "words"),
    [
        ([_input(name="z")], {}, "unknown input(s) ['z']; model 'tiny' takes ['x']"),
        ([_input(), _input(name="z")], {}, "unknown input(s) ['z']"),
        ([_input(datatype="FP64")], {}, "datatype FP64 given, model expects FP32"),
        ([_input(shape=[4], data=[1, 2, 3, 4])], {}, "shape [4] does not match model shape"),
        ([_input(shape=[2, 2])], {}, "shape [2, 2] does not match model shape [-1, 4]"),
        ([_input(shape=[0, 4], data=[])], {}, "batch size 0 is outside 1..8"),
        ([_input(shape=[9, 4], data=[0] * 36)], {}, "batch size 9 is outside 1..8"),
        ([_input()], {"outputs": [{"name": "q"}]}, "unknown output 'q'"),
    ],
)
def test_a_request_that_does_not_fit_the_manifest_is_refused(
    inputs: list[Any], top: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        _checked(*inputs, **top)
    assert words in str(refused.value)


def test_a_missing_input_is_named() -> None:
    manifest = tiny_manifest()
    two = type(manifest).from_json(
        {
            "name": "two",
            "version": "1",
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
            ],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
        }
    )
    with pytest.raises(InvalidInput, match=r"missing input\(s\) \['b'\]"):
        check_against(parse_request(_request(_input(name="a")), None), two)
    both = _request(_input(name="a"), _input(name="b", shape=[2, 4], data=[0] * 8))
    with pytest.raises(InvalidInput, match="same batch size"):
        check_against(parse_request(both, None), two)
