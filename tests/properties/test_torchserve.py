"""TorchServe bodies (JSON instances) and images: any body is inputs or InvalidInput (400);
a PNG decodes to exactly the pixels that were encoded."""

from __future__ import annotations

import io
import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tests.properties.own_errors import json_values, refused_cleanly
from tests.support import tiny_manifest
from trustserve.imaging import decode_image
from trustserve.worker.batching import _torchserve_inputs

MANIFEST = tiny_manifest()


@given(st.binary(max_size=400))
def test_any_bytes_are_inputs_or_invalid_input(body: bytes) -> None:
    refused_cleanly(lambda: _torchserve_inputs(body, MANIFEST, None))


@given(json_values)
def test_any_json_is_inputs_or_invalid_input(value: object) -> None:
    body = json.dumps(value).encode()
    refused_cleanly(lambda: _torchserve_inputs(body, MANIFEST, None))


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.just(4)),
        elements=st.floats(-1e6, 1e6, width=32),
    )
)
def test_instances_round_trip(rows: np.ndarray) -> None:
    inputs = _torchserve_inputs(json.dumps({"instances": rows.tolist()}).encode(), MANIFEST, None)
    assert np.array_equal(inputs["x"], rows)


@given(st.binary(max_size=600))
def test_any_bytes_are_an_image_or_invalid_input(data: bytes) -> None:
    refused_cleanly(lambda: decode_image(b"\x89PNG\r\n\x1a\n" + data))
    refused_cleanly(lambda: decode_image(b"\xff\xd8\xff" + data))
    refused_cleanly(lambda: decode_image(data))


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_png_round_trip_is_exact(pixels: np.ndarray) -> None:
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    assert np.array_equal(np.asarray(decode_image(out.getvalue())), pixels)


@given(st.data())
def test_a_damaged_png_is_an_image_or_invalid_input(data: st.DataObject) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, format="PNG")
    raw = bytearray(out.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    refused_cleanly(lambda: decode_image(bytes(raw[:cut])))
