"""Sample data for calibration and validation: synthetic images, image/.npy folders, labelled sets.

A folder of calibration samples holds JPEG/PNG images (run through the
model's image preprocessing) or ``.npy`` arrays (used as they are: one sample
shaped like the model input without its batch dimension, or a stack of them).

A labelled set is a folder with one subfolder per label, named after the
label (one of the manifest's labels, or a class index when the manifest has
none), each holding images or ``.npy`` files of that class::

    valset/cat/0001.jpg   valset/dog/0002.png   valset/7/samples.npy
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from trustserve.archive import ImagePreprocessing
from trustserve.errors import InvalidInput
from trustserve.imaging import preprocess_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Array = npt.NDArray[np.float32]


def synthetic_image(seed: int, *, fmt: str = "JPEG") -> bytes:
    """A deterministic, photo-like test image: a smooth colour field with shapes and grain."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(240, 420, size=2))
    # Low-frequency colour field: a tiny random grid upsampled smoothly.
    grid = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
    pixels = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(height, width, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    img.save(out, fmt, quality=90) if fmt == "JPEG" else img.save(out, fmt)
    return out.getvalue()


def synthetic_image_batch(pre: ImagePreprocessing, seeds: Iterable[int]) -> Array:
    """Synthetic images (alternating JPEG and PNG) through ``pre``, stacked ``[N,3,crop,crop]``."""
    return np.stack(
        [preprocess_image(synthetic_image(s, fmt="PNG" if s % 2 else "JPEG"), pre) for s in seeds]
    )


def load_sample_file(
    path: Path, pre: ImagePreprocessing | None, sample_shape: Sequence[int]
) -> Array:
    """One image or ``.npy`` file as a stack of samples ``[k, *sample_shape]``."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if pre is None:
            raise InvalidInput(
                f"{path.name}: images need image preprocessing (pass --manifest with "
                "a 'preprocessing' section)"
            )
        return preprocess_image(path.read_bytes(), pre)[None]
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path.name}: not a readable .npy array: {exc}") from None
        arr = np.asarray(arr, dtype=np.float32)
        if _matches(arr.shape, sample_shape):
            return arr[None]
        if arr.ndim == len(sample_shape) + 1 and _matches(arr.shape[1:], sample_shape):
            return arr
        raise InvalidInput(
            f"{path.name}: shape {list(arr.shape)} is neither a sample {list(sample_shape)} "
            "nor a stack of them"
        )
    raise InvalidInput(f"{path.name}: expected a .jpg, .jpeg, .png or .npy file")


def _matches(shape: Sequence[int], want: Sequence[int]) -> bool:
    return len(shape) == len(want) and all(
        w < 0 or s == w for s, w in zip(shape, want, strict=True)
    )


def sample_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy")
    )
    if not files:
        raise InvalidInput(f"{folder}: no .jpg, .jpeg, .png or .npy files")
    return files


def folder_samples(
    folder: Path, pre: ImagePreprocessing | None, sample_shape: Sequence[int]
) -> Iterator[Array]:
    """Every sample in a folder, one stack per file, in file name order."""
    for path in sample_files(folder):
        yield load_sample_file(path, pre, sample_shape)


def labelled_set(
    folder: Path,
    pre: ImagePreprocessing | None,
    sample_shape: Sequence[int],
    labels: Sequence[str] | None,
) -> tuple[Array, npt.NDArray[np.int64]]:
    """A labelled set (one subfolder per label) as ``(samples, class indices)``."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a directory")
    xs: list[Array] = []
    ys: list[int] = []
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subdirs:
        raise InvalidInput(f"{folder}: a labelled set needs one subfolder per label")
    for sub in subdirs:
        index = _label_index(sub.name, labels)
        for stack in folder_samples(sub, pre, sample_shape):
            xs.append(stack)
            ys.extend([index] * len(stack))
    return np.concatenate(xs), np.asarray(ys, dtype=np.int64)


def _label_index(name: str, labels: Sequence[str] | None) -> int:
    if labels is not None:
        if name in labels:
            return list(labels).index(name)
        raise InvalidInput(f"label folder {name!r} is not one of the manifest's labels")
    if name.isdigit():
        return int(name)
    raise InvalidInput(f"label folder {name!r} must be a class index (the manifest has no labels)")


def batches(samples: Iterable[Array], batch_size: int) -> Iterator[Array]:
    """Re-chunk stacks of samples into batches of ``batch_size`` (the last may be smaller)."""
    pending: list[Array] = []
    count = 0
    for stack in samples:
        for row in stack:
            pending.append(row)
            count += 1
            if count == batch_size:
                yield np.stack(pending)
                pending, count = [], 0
    if pending:
        yield np.stack(pending)
