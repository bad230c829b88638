"""The commands: trustserve demo-models, model pack / inspect / quantize."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from trustserve import archive
from trustserve.cli import main
from trustserve.models.quantize import is_quantized

TINY_MANIFEST = {
    "name": "tiny",
    "version": "1",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}],
    "preprocessing": {"resize": 36, "crop": 32},
    "labels": ["a", "b", "c", "d"],
}


def tiny_image_model() -> bytes:
    """A four-class conv net on 32x32 RGB, built here (weights from a fresh random generator)."""
    rng = np.random.default_rng()
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_image_model())
    manifest = tmp_path / "tiny.yaml"
    manifest.write_text(yaml.safe_dump(TINY_MANIFEST))
    return model, manifest


def image_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng()
    for i in range(count):
        pixels = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
        fmt = "PNG" if i % 2 else "JPEG"
        Image.fromarray(pixels, "RGB").save(folder / f"{i}.{fmt.lower()}", fmt)
    return folder


def test_demo_models_second_run_skips_what_is_built(
    demo_store: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = demo_store["digits"].parent
    before = {p: p.stat().st_mtime_ns for p in store.glob("*.tsm")}
    assert main(["demo-models", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 3
    assert {p: p.stat().st_mtime_ns for p in store.glob("*.tsm")} == before


def test_pack_then_inspect(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, manifest = tiny
    out = tmp_path / "tiny.tsm"
    assert main(["model", "pack", str(model), "--manifest", str(manifest), "-o", str(out)]) == 0
    arc = archive.load(out)
    assert arc.payload == model.read_bytes()
    assert arc.manifest.preprocessing == archive.ImagePreprocessing(resize=36, crop=32)
    capsys.readouterr()
    assert main(["model", "inspect", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["manifest"]["name"] == "tiny"
    assert shown["manifest"]["labels"] == ["a", "b", "c", "d"]
    assert shown["encryption"] is None
    assert shown["payload_bytes"] == model.stat().st_size


def test_pack_names_every_mismatch(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = tiny
    wrong = dict(TINY_MANIFEST)
    wrong["inputs"] = [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    wrong["outputs"] = [{"name": "logits", "datatype": "FP16", "shape": [-1, 5]}]
    wrong["labels"] = ["a", "b", "c", "d", "e"]
    manifest = tmp_path / "wrong.json"
    manifest.write_text(json.dumps(wrong))
    out = tmp_path / "wrong.tsm"
    assert main(["model", "pack", str(model), "--manifest", str(manifest), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "manifest input 'image' is not a model input" in err
    assert "model input 'input' is missing from the manifest" in err
    assert "output 'logits': manifest says FP16, the model has FP32" in err
    assert "manifest shape [-1, 5] does not fit the model's [-1, 4]" in err
    assert not out.exists()


def test_pack_refuses_a_file_that_is_not_onnx(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest = tiny
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(64))
    out = tmp_path / "junk.tsm"
    assert main(["model", "pack", str(junk), "--manifest", str(manifest), "-o", str(out)]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert not out.exists()


def test_inspect_shows_the_public_header_of_an_encrypted_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Random bytes stand in for the ciphertext: inspect reads only the header."""
    manifest = archive.Manifest.from_json(TINY_MANIFEST)
    encryption = {"scheme": "example-streaming-aead", "key_id": os.urandom(8).hex()}
    path = tmp_path / "sealed.tsm"
    path.write_bytes(archive.pack(manifest, os.urandom(4096), encryption))
    assert main(["model", "inspect", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["encryption"] == encryption
    assert shown["manifest"]["version"] == "1"
    assert shown["payload_bytes"] == 4096


def test_inspect_refuses_a_file_that_is_no_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.tsm"
    path.write_bytes(b"PK\x03\x04 not an archive")
    assert main(["model", "inspect", str(path)]) == 2
    assert "not a trustserve model archive" in capsys.readouterr().err


def test_inspect_of_a_missing_file_says_so_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "inspect", str(tmp_path / "nowhere.tsm")]) == 2
    err = capsys.readouterr().err
    assert "cannot read archive" in err and "No such file" in err
    assert "Traceback" not in err


def test_pack_refuses_labels_that_do_not_match_the_classes(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three labels for four classes would serve raw logits instead of labels, silently."""
    model, _ = tiny
    manifest = tmp_path / "labels.json"
    manifest.write_text(json.dumps({**TINY_MANIFEST, "labels": ["a", "b", "c"]}))
    out = tmp_path / "labels.tsm"
    assert main(["model", "pack", str(model), "--manifest", str(manifest), "-o", str(out)]) == 2
    assert "3 labels for 4 classes" in capsys.readouterr().err
    assert not out.exists()


def test_quantize_on_image_folder_with_validation(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, manifest = tiny
    calib = image_folder(tmp_path / "calib", 6)
    val = tmp_path / "val"
    for label in ("a", "c"):
        image_folder(val / label, 3)
    out = tmp_path / "tiny-int8.onnx"
    argv = ["model", "quantize", str(model), "-o", str(out), "--calibration", str(calib)]
    rc = main([*argv, "--manifest", str(manifest), "--validate", str(val)])
    assert rc == 0
    printed = capsys.readouterr()
    assert "calibrated on 6 samples" in printed.out
    assert "FP32 accuracy:" in printed.out and "INT8 accuracy:" in printed.out
    assert "samples: 6" in printed.out
    assert "calibrating" in printed.err  # the progress bar
    assert is_quantized(onnx.load(str(out)))


def test_quantize_with_n_synthetic_images(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, manifest = tiny
    out = tmp_path / "tiny-int8.onnx"
    argv = ["model", "quantize", str(model), "-o", str(out), "--calibration", "5"]
    assert main([*argv, "--manifest", str(manifest)]) == 0
    assert "calibrated on 5 samples" in capsys.readouterr().out
    assert is_quantized(onnx.load(str(out)))


def test_quantize_images_without_preprocessing_is_refused(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = tiny
    calib = image_folder(tmp_path / "calib", 2)
    out = tmp_path / "tiny-int8.onnx"
    argv = ["model", "quantize", str(model), "-o", str(out), "--calibration", str(calib)]
    assert main(argv) == 2
    assert "images need image preprocessing" in capsys.readouterr().err
    assert not out.exists()


def test_quantize_digits_from_npy_with_labelled_npy_set(
    demo_store: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = demo_store["digits"].parent
    out = tmp_path / "digits-int8.onnx"
    argv = ["model", "quantize", str(demo_store["onnx/digits"]), "-o", str(out)]
    argv += ["--calibration", str(store / "data/digits-calibration")]
    argv += ["--validate", str(store / "data/digits-test"), "--manifest", str(demo_store["digits"])]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    print(printed)
    lines = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
    fp32, int8 = (float(lines[k].rstrip("%")) for k in ("FP32 accuracy", "INT8 accuracy"))
    assert lines["samples"] == "360"
    assert fp32 >= 95.0 and fp32 - int8 <= 0.5


def test_npy_sample_of_the_wrong_shape_is_refused(
    demo_store: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 63), dtype=np.float32))
    (calib / "bad.npy").write_bytes(buf.getvalue())
    argv = ["model", "quantize", str(demo_store["onnx/digits"]), "-o", str(tmp_path / "o.onnx")]
    assert main([*argv, "--calibration", str(calib)]) == 2
    assert "bad.npy: shape [4, 63] is neither a sample [64] nor a stack of them" in (
        capsys.readouterr().err
    )


def test_quantize_command_on_the_resnet50_demo_model(
    demo_store: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from trustserve.cli import main
    from trustserve.models.quantize import is_quantized

    out = tmp_path / "resnet50-int8.onnx"
    code = main(
        [
            "model",
            "quantize",
            str(demo_store["onnx/resnet50-fp32"]),
            "-o",
            str(out),
            "--calibration",
            "4",
        ]
    )
    assert code == 0
    assert is_quantized(onnx.load(str(out)))
