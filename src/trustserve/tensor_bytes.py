"""v2 BYTES: encoded images for a model with image preprocessing, as binary data only.

Each element is a 4-byte little-endian length, then its bytes (the KServe/Triton binary
data format, what ``tritonclient`` sends); the frontend and the broker carry them as they
came and the worker decodes each image (``trustserve.imaging``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from trustserve.errors import InvalidInput

BYTES = "BYTES"
_LEN = 4


def bytes_elements(data: memoryview, shape: tuple[int, ...], where: str) -> npt.NDArray[Any]:
    """BYTES binary data: ``prod(shape)`` elements, each a 4-byte little-endian length and
    that many bytes, exactly filling ``data``."""
    count = math.prod(shape)
    items: list[bytes] = []
    pos = 0
    while pos + _LEN <= len(data) and len(items) < count:
        n = int.from_bytes(data[pos : pos + _LEN], "little")
        if pos + _LEN + n > len(data):
            break
        items.append(bytes(data[pos + _LEN : pos + _LEN + n]))
        pos += _LEN + n
    if len(items) != count or pos != len(data):
        raise InvalidInput(
            f"{where}: BYTES data is not {count} length-prefixed elements "
            f"(4-byte little-endian lengths) filling its {len(data)} bytes"
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


def bytes_data(array: npt.NDArray[Any]) -> bytes:
    """An object array of ``bytes`` as BYTES binary data."""
    parts = []
    for item in array.reshape(-1):
        if not isinstance(item, bytes):
            raise InvalidInput(f"BYTES elements must be bytes, not {type(item).__name__}")
        parts += [len(item).to_bytes(_LEN, "little"), item]
    return b"".join(parts)
