"""Build the demo models into a model store: ``resnet50`` (INT8 and FP32) and ``digits``.

Layout written under ``out_dir``::

    resnet50.tsm            resnet50, version "int8"  (the default version)
    resnet50-fp32.tsm       resnet50, version "fp32"
    digits.tsm              digits, version "1"
    onnx/resnet50-fp32.onnx onnx/resnet50-int8.onnx onnx/digits.onnx onnx/digits-int8.onnx
    data/digits-calibration/train.npy        the training split, for ``model quantize``
    data/digits-test/<label>/samples.npy     the held-out split, for ``--validate``

A second call finds every output present and built by the same recipe and
returns at once; an output that is missing or from another recipe is rebuilt.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trustserve import archive, files
from trustserve.errors import ArchiveError
from trustserve.models import digits, resnet
from trustserve.models.calibration import batches, synthetic_image_batch
from trustserve.models.quantize import compare, quantize_model

# Bump when a build changes what it produces, so stale stores are rebuilt.
RECIPE = "2"  # 2: the resnet50 INT8 keeps its last layer (fc) in FP32
RESNET_CALIBRATION = 32
RESNET_CHECK_SEEDS = range(200_000, 200_032)

Log = Callable[[str], None]


def build_demo_models(
    out_dir: Path, *, int8: bool = True, log: Log | None = None, progress: bool = False
) -> dict[str, Path]:
    """Write the demo archives and ONNX files (skipping valid ones); returns them by name.

    Keys: ``digits``, ``resnet50-fp32``, ``resnet50`` and its alias ``resnet50-int8``
    (only with ``int8``), and ``onnx/<file stem>`` for each raw ONNX model.
    """
    say: Log = log or (lambda _msg: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths.update(_digits(out_dir, say))
    paths.update(_resnet_fp32(out_dir, say))
    if int8:
        paths.update(_resnet_int8(out_dir, say, progress))
    return paths


def _current(archive_path: Path, *onnx_paths: Path) -> bool:
    """Whether an archive (and its raw ONNX files) exist and come from this recipe."""
    if not all(p.is_file() and p.stat().st_size > 0 for p in onnx_paths):
        return False
    try:
        head = archive.read_header(archive_path)
    except (ArchiveError, OSError):
        return False
    if archive_path.stat().st_size <= len(head.header_bytes):
        return False
    return head.manifest.extra.get("recipe") == RECIPE


def _write(path: Path, manifest: archive.Manifest, model: bytes) -> None:
    files.write_atomic(path, archive.pack(manifest, model))


def _digits(out: Path, say: Log) -> dict[str, Path]:
    tsm, raw, raw8 = out / "digits.tsm", out / "onnx/digits.onnx", out / "onnx/digits-int8.onnx"
    calib, test = out / "data/digits-calibration", out / "data/digits-test"
    paths = {"digits": tsm, "onnx/digits": raw, "onnx/digits-int8": raw8}
    if _current(tsm, raw, raw8) and (calib / "train.npy").is_file():
        say(f"digits: up to date ({tsm})")
        return paths
    start = time.monotonic()
    built = digits.train_digits()
    model = built.model.SerializeToString()
    files.write_atomic(raw, model)
    split = built.split
    files.write_atomic(calib / "train.npy", _npy(split.x_train))
    for label in range(10):
        files.write_atomic(
            test / str(label) / "samples.npy", _npy(split.x_test[split.y_test == label])
        )
    quantize_model(raw, raw8, batches([split.x_train], 64), progress=False)
    check = compare(raw, raw8, split.x_test, split.y_test)
    manifest = digits.digits_manifest(accuracy=check.fp32_accuracy)
    _write(tsm, _stamped(manifest), model)
    say(
        f"digits: held-out accuracy {100 * (check.fp32_accuracy or 0):.2f}% "
        f"({check.samples} samples; INT8 {100 * (check.int8_accuracy or 0):.2f}%), "
        f"built in {time.monotonic() - start:.1f}s"
    )
    return paths


def _resnet_fp32(out: Path, say: Log) -> dict[str, Path]:
    tsm, raw = out / "resnet50-fp32.tsm", out / "onnx/resnet50-fp32.onnx"
    paths = {"resnet50-fp32": tsm, "onnx/resnet50-fp32": raw}
    if _current(tsm, raw):
        say(f"resnet50 fp32: up to date ({tsm})")
        return paths
    say("resnet50 fp32: building ResNet-50 v1.5 with synthetic weights")
    start = time.monotonic()
    model = resnet.build_resnet50().SerializeToString()
    files.write_atomic(raw, model)
    manifest = resnet.resnet50_manifest("fp32", precision="fp32", default=False)
    _write(tsm, _stamped(manifest), model)
    size = len(model) / 1e6
    say(f"resnet50 fp32: {size:.0f} MB, built in {time.monotonic() - start:.1f}s")
    return paths


def _resnet_int8(out: Path, say: Log, progress: bool) -> dict[str, Path]:
    tsm, raw = out / "resnet50.tsm", out / "onnx/resnet50-int8.onnx"
    fp32 = out / "onnx/resnet50-fp32.onnx"
    paths = {"resnet50": tsm, "resnet50-int8": tsm, "onnx/resnet50-int8": raw}
    if _current(tsm, raw):
        say(f"resnet50 int8: up to date ({tsm})")
        return paths
    say(f"resnet50 int8: static QDQ quantization on {RESNET_CALIBRATION} synthetic images")
    start = time.monotonic()
    pre = archive.ImagePreprocessing()
    calibration = (
        synthetic_image_batch(pre, range(i, min(i + 8, RESNET_CALIBRATION)))
        for i in range(0, RESNET_CALIBRATION, 8)
    )
    quantize_model(
        fp32, raw, calibration, total=RESNET_CALIBRATION, progress=progress, keep_fp32=["fc"]
    )
    took = time.monotonic() - start
    check = compare(fp32, raw, synthetic_image_batch(pre, RESNET_CHECK_SEEDS))
    manifest = resnet.resnet50_manifest("int8", precision="int8", default=True)
    extra = {**manifest.extra, "fp32_top1_agreement": round(check.top1_agreement, 4)}
    manifest = archive.Manifest.from_json({**manifest.to_json(), "extra": extra})
    model = raw.read_bytes()
    _write(tsm, _stamped(manifest), model)
    say(
        f"resnet50 int8: {len(model) / 1e6:.0f} MB, quantized in {took:.1f}s; top-1 agreement "
        f"with FP32 on {check.samples} other synthetic images: {100 * check.top1_agreement:.1f}%"
    )
    return paths


def _stamped(manifest: archive.Manifest) -> archive.Manifest:
    return archive.Manifest.from_json(
        {**manifest.to_json(), "extra": {**manifest.extra, "recipe": RECIPE}}
    )


def _npy(arr: npt.NDArray[np.generic]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
