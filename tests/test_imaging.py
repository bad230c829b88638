"""trustserve.imaging: what the worker (and INT8 calibration) feeds resnet50 from JPEG/PNG bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from trustserve.archive import ImagePreprocessing
from trustserve.errors import InvalidInput
from trustserve.imaging import preprocess_image

PRE = ImagePreprocessing()
MEAN = np.array(PRE.mean, dtype=np.float32)[:, None, None]
STD = np.array(PRE.std, dtype=np.float32)[:, None, None]


def encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def pixels(x: np.ndarray) -> np.ndarray:
    """Undo the normalisation: back to 0..255 RGB values, CHW."""
    return (x * STD + MEAN) * 255.0


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a size in its header and holding no pixels (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_png_solid_colour_is_normalised_per_channel() -> None:
    x = preprocess_image(encode(Image.new("RGB", (300, 300), (200, 100, 50)), "PNG"), PRE)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    want = (np.array([200, 100, 50], dtype=np.float32)[:, None, None] / 255.0 - MEAN) / STD
    np.testing.assert_allclose(x, np.broadcast_to(want, x.shape), atol=1e-5)


def test_jpeg_wide_image_is_resized_on_its_short_side_and_centre_cropped() -> None:
    # 600x300: a red stripe in the middle, blue borders 100 px wide on the left and right.
    img = Image.new("RGB", (600, 300), (0, 255, 0))
    img.paste((255, 0, 0), (280, 0, 320, 300))
    img.paste((0, 0, 255), (0, 0, 100, 300))
    img.paste((0, 0, 255), (500, 0, 600, 300))
    x = pixels(preprocess_image(encode(img, "JPEG"), PRE))
    assert x.shape == (3, 224, 224)
    # Resized to 512x256, cropped to the middle 224 columns: the stripe is centred ...
    assert x[0, 112, 112] > 200 and x[1, 112, 112] < 60
    # ... and the blue borders (85 px wide after resizing) are cut off entirely.
    assert x[1, 112, 0] > 200 and x[1, 112, 223] > 200
    assert x[2, :, :].max() < 60


def test_greyscale_and_rgba_pngs_become_three_channels() -> None:
    grey = preprocess_image(encode(Image.new("L", (256, 256), 128), "PNG"), PRE)
    rgba = preprocess_image(encode(Image.new("RGBA", (256, 256), (128, 128, 128, 10)), "PNG"), PRE)
    np.testing.assert_allclose(grey, rgba, atol=1e-5)
    np.testing.assert_allclose(pixels(grey), 128.0, atol=1e-3)


def test_small_image_is_upscaled_to_the_crop() -> None:
    x = preprocess_image(encode(Image.new("RGB", (32, 48), (10, 20, 30)), "PNG"), PRE)
    assert x.shape == (3, 224, 224)
    assert np.isfinite(x).all()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a JPEG or PNG"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a JPEG or PNG"),
    ],
)
def test_bytes_that_are_no_image_are_invalid_input(data: bytes, why: str) -> None:
    with pytest.raises(InvalidInput, match=f"image does not decode: {why}"):
        preprocess_image(data, PRE)


def test_truncated_jpeg_is_invalid_input() -> None:
    data = encode(Image.new("RGB", (400, 400), (1, 2, 3)), "JPEG")
    with pytest.raises(InvalidInput, match="image does not decode"):
        preprocess_image(data[: len(data) // 2], PRE)


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    # 10000 x 5000 = 50 megapixels: over trustserve's 40 MP limit, under Pillow's own.
    with pytest.raises(InvalidInput, match="over the limit of 40000000 pixels"):
        preprocess_image(png_header_only(10_000, 5_000), PRE)


def test_decompression_bomb_is_refused() -> None:
    # 30000 x 30000 = 900 megapixels in a few dozen bytes: Pillow's bomb check fires in open().
    with pytest.raises(InvalidInput, match="over the limit"):
        preprocess_image(png_header_only(30_000, 30_000), PRE)


def test_pixel_limit_is_a_parameter() -> None:
    data = encode(Image.new("RGB", (300, 200), (0, 0, 0)), "PNG")
    with pytest.raises(InvalidInput, match="300x200 pixels is over the limit of 50000"):
        preprocess_image(data, PRE, max_pixels=50_000)
