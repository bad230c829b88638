"""Image preprocessing for image classifiers: JPEG/PNG bytes to a normalized CHW tensor.

The pipeline is the usual ImageNet one (as torchvision's ``Resize`` +
``CenterCrop`` + ``ToTensor`` + ``Normalize`` on PIL images): decode, convert
to RGB, resize the short side with bilinear filtering, center-crop, scale to
[0, 1], normalize per channel, HWC to CHW. EXIF orientation is not applied
(as in torchvision). Anything that is not a JPEG or PNG image we can decode
within the pixel limit is an :class:`~trustserve.errors.InvalidInput`.

A shared format, as the archive's ``ImagePreprocessing`` that defines it: the worker applies
it to requests inside the TEE, and ``models/calibration.py`` to calibration images at packing
time, so the build tools need not import the worker.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from trustserve.archive import ImagePreprocessing
from trustserve.errors import InvalidInput

FORMATS = ("JPEG", "PNG")
# 40 megapixels decode to 120 MB of RGB; anything larger is refused before decoding.
MAX_PIXELS = 40_000_000
# All the images of one request together (v2 BYTES carries up to max_batch_size of them):
# without it, 1,024 small JPEGs of 40 MP each would hold a worker's engine for minutes.
MAX_REQUEST_PIXELS = 256_000_000


def preprocess_image(
    data: bytes, pre: ImagePreprocessing, *, max_pixels: int = MAX_PIXELS
) -> npt.NDArray[np.float32]:
    """Decode one JPEG/PNG image and return it as float32 ``[3, crop, crop]``."""
    img = decode_image(data, short_side=pre.resize, max_pixels=max_pixels)
    return image_to_tensor(img, pre)


def check_request_pixels(images: list[bytes], *, limit: int | None = None) -> None:
    """Refuse, before decoding any, images whose headers add up to more than ``limit``
    pixels. Reading a header decodes nothing; an image without one is left for
    ``decode_image`` to refuse."""
    limit = MAX_REQUEST_PIXELS if limit is None else limit
    total = 0
    for image in images:
        try:
            with Image.open(io.BytesIO(image), formats=FORMATS) as img:
                width, height = img.size
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            width, height = MAX_PIXELS + 1, 1
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            continue
        total += width * height
        if total > limit:
            raise InvalidInput(
                f"the {len(images)} images of this request have over {limit} pixels "
                "together; send them in smaller requests"
            )


def decode_image(data: bytes, *, short_side: int = 0, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode JPEG/PNG bytes to an RGB image, refusing oversized or broken ones.

    With ``short_side``, a large JPEG is decoded at a reduced scale that still
    leaves its short side at least that long (libjpeg's DCT scaling; faster).
    """
    if not data:
        raise InvalidInput("image does not decode: empty body")
    try:
        # Pillow checks its own (larger) bomb limit in open(); where warnings are
        # errors that check raises, which is caught below as a refusal too.
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        if width < 1 or height < 1:
            raise InvalidInput("image does not decode: empty image")
        if width * height > max_pixels:
            raise InvalidInput(
                f"image does not decode: {width}x{height} pixels is over the limit "
                f"of {max_pixels} pixels"
            )
        if short_side and img.format == "JPEG":
            scale = short_side / min(width, height)
            img.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
        img.load()
        return img.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidInput(
            f"image does not decode: over the limit of {max_pixels} pixels"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput("image does not decode: not a JPEG or PNG image we can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"image does not decode: {exc}") from None


def image_to_tensor(img: Image.Image, pre: ImagePreprocessing) -> npt.NDArray[np.float32]:
    """Resize the short side, center-crop, scale and normalize an RGB image to CHW."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    width, height = img.size
    if width <= height:
        size = (pre.resize, max(1, int(pre.resize * height / width)))
    else:
        size = (max(1, int(pre.resize * width / height)), pre.resize)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - pre.crop) / 2.0)
    top = round((size[1] - pre.crop) / 2.0)
    img = img.crop((left, top, left + pre.crop, top + pre.crop))
    arr = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
