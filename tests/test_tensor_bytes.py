"""v2 BYTES inputs (issue 25): encoded images travel as they are, and only to image models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import tiny_manifest
from trustserve.errors import InvalidInput
from trustserve.models.calibration import synthetic_image
from trustserve.tensors import Tensor, bytes_data, check_against, encode_binary, parse_request

IMAGE_MODEL = tiny_manifest(
    inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}],
    preprocessing={"resize": 20, "crop": 16},
)


def images(*seeds: int) -> np.ndarray:
    array = np.empty(len(seeds), dtype=object)
    array[:] = [synthetic_image(s) for s in seeds]
    return array


def body(array: np.ndarray, name: str = "input") -> tuple[bytes, str]:
    out, head_len = encode_binary({}, "inputs", [Tensor(name, "BYTES", array.shape, array)])
    return out, str(head_len)


def test_jpegs_as_bytes_are_read_back_as_the_same_bytes() -> None:
    sent = images(1, 2, 3)
    got = parse_request(*body(sent), IMAGE_MODEL)
    check_against(got, IMAGE_MODEL)
    (t,) = got.inputs
    assert (t.datatype, t.shape, got.all_binary) == ("BYTES", (3,), True)
    assert list(t.data) == list(sent)
    assert parse_request(*body(sent.reshape(3, 1)), IMAGE_MODEL).inputs[0].shape == (3, 1)


def test_bytes_to_a_model_without_image_preprocessing_are_refused() -> None:
    with pytest.raises(InvalidInput, match="takes no images"):
        parse_request(*body(images(1), name="x"), tiny_manifest())
    request = parse_request(*body(images(1), name="x"))  # the worker checks after parsing
    with pytest.raises(InvalidInput, match="takes no images"):
        check_against(request, tiny_manifest())


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda b: b[:-1], "BYTES go as binary data, with a binary_data_size within"),
        (lambda b: b + b"\x00", "the inputs account for"),
    ],
)
def test_bytes_whose_lengths_do_not_add_up_are_refused(mangle: object, words: str) -> None:
    raw, head_len = body(images(1, 2))
    with pytest.raises(InvalidInput, match=words):
        parse_request(mangle(raw), head_len, IMAGE_MODEL)  # type: ignore[operator]


def test_a_length_prefix_past_the_end_is_refused() -> None:
    data = bytes_data(images(1))
    forged = (len(data) * 4).to_bytes(4, "little") + data[4:]
    head = b'{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],'
    head += b'"parameters":{"binary_data_size":%d}}]}' % len(forged)
    with pytest.raises(InvalidInput, match="length-prefixed elements"):
        parse_request(head + forged, str(len(head)), IMAGE_MODEL)


def test_bytes_as_json_data_or_in_a_wrong_shape_are_refused() -> None:
    head = b'{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"data":["x"]}]}'
    with pytest.raises(InvalidInput, match="BYTES go as binary data"):
        parse_request(head, None, IMAGE_MODEL)
    with pytest.raises(InvalidInput, match=r"not \[N\] or \[N, 1\]"):
        parse_request(*body(images(1, 2).reshape(1, 2)), IMAGE_MODEL)
