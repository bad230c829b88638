"""Attack (issue 25 review): one v2 BYTES request carrying many images, each under the
per-image pixel limit, that together would hold a worker's engine thread for minutes.
The worker adds up the images' header sizes and refuses the request before decoding any."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from trustserve import imaging
from trustserve.errors import InvalidInput
from trustserve.worker import batching


def jpeg(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 150)).save(out, "JPEG", quality=50)
    return out.getvalue()


def as_bytes_tensor(images: list[bytes]) -> Any:
    encoded = np.empty(len(images), dtype=object)
    encoded[:] = images
    return encoded


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> Any:
        self.calls += 1
        return np.zeros((3, 4, 4), np.float32)


def test_many_images_over_the_request_budget_are_refused_before_any_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imaging, "MAX_REQUEST_PIXELS", 10_000_000)
    images = [jpeg(1000)] * 11  # 1 MP each: each alone is fine, 11 MP together are not
    preprocess = Counting()
    with pytest.raises(InvalidInput, match="11 images of this request have over 10000000"):
        batching._images(as_bytes_tensor(images), preprocess)
    assert preprocess.calls == 0


def test_images_within_the_request_budget_are_all_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imaging, "MAX_REQUEST_PIXELS", 10_000_000)
    preprocess = Counting()
    out = batching._images(as_bytes_tensor([jpeg(1000)] * 10), preprocess)
    assert preprocess.calls == 10 and out.shape == (10, 3, 4, 4)


def test_an_element_that_is_no_image_is_left_for_the_decoder_to_refuse() -> None:
    imaging.check_request_pixels([b"not an image", jpeg(16)])
    with pytest.raises(InvalidInput, match="not a JPEG or PNG"):
        imaging.decode_image(b"not an image")
