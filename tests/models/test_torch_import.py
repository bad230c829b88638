"""PyTorch in, without a stack: what is refused, and that nothing from an archive runs unasked.

The serving side (import, serve, compare with torch) is in test_torch_serving.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.models.torch_models import (
    EAGER_SOURCE,
    LABELS,
    TwoHeads,
    classifier,
    state_dict_bytes,
    torchscript_bytes,
    write_mar,
)
from trustserve import archive
from trustserve.cli import main
from trustserve.models.mar import import_mar

ATOL = 1e-4


class _Planted:
    """Unpickling this creates a file: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def planted_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"weight": _Planted(marker)}, buf)
    return buf.getvalue()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def onnx_of(tsm: Path) -> ort.InferenceSession:
    head = archive.read_header(tsm)
    payload = tsm.read_bytes()[len(head.header_bytes) :]
    return ort.InferenceSession(payload, providers=["CPUExecutionProvider"])


def test_eager_mar_refused_without_the_flag_and_its_code_never_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    source = EAGER_SOURCE.format(marker=str(marker))
    mar = write_mar(tmp_path / "eager.mar", state_dict_bytes(classifier(1)), model_file=source)
    code, _, err = run(capsys, "model", "import-mar", str(mar), "-o", str(tmp_path / "e.tsm"))
    assert code == 2
    assert "RUNS THE ARCHIVE'S PYTHON CODE" in err and "--trust-model-code" in err
    assert not marker.exists()
    assert not (tmp_path / "e.tsm").exists()


def test_eager_mar_with_the_flag_runs_sandboxed_and_matches_torch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    net = classifier(int(np.random.default_rng().integers(1 << 31)))
    source = EAGER_SOURCE.format(marker=str(marker))
    mar = write_mar(tmp_path / "eager.mar", state_dict_bytes(net), model_file=source)
    out = tmp_path / "eager.tsm"
    code, stdout, err = run(
        capsys, "model", "import-mar", str(mar), "-o", str(out), "--trust-mar-code"
    )
    assert code == 0, err
    assert "!!! --trust-model-code: running the code inside" in err  # said loudly
    assert not marker.exists()  # its code ran (it defines the model) but could not write
    assert "torch and ONNX Runtime agree within" in stdout
    m = archive.read_header(out).manifest
    assert m.extra["mar_model"] == "eager" and m.labels == ("0", "1", "2")
    x = np.random.default_rng().standard_normal((3, 3, 224, 224)).astype(np.float32)
    (got,) = onnx_of(out).run(None, {"input": x})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_a_pickle_in_the_archive_never_runs(tmp_path: Path) -> None:
    """The attack: a .mar whose serialized file is a pickle that runs code when loaded."""
    marker = tmp_path / "pwned"
    as_torchscript = write_mar(tmp_path / "ts.mar", planted_pickle(marker))
    with pytest.raises(archive.ArchiveError, match="not a TorchScript model"):
        import_mar(as_torchscript, trust_code=True)
    assert not marker.exists()
    # even with --trust-mar-code, weights are loaded with torch's weights-only unpickler
    source = EAGER_SOURCE.format(marker=str(tmp_path / "model-code-ran"))
    as_eager = write_mar(tmp_path / "e.mar", planted_pickle(marker), model_file=source)
    with pytest.raises(archive.ArchiveError, match="cannot load its state dict"):
        import_mar(as_eager, trust_code=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("handler", "extra"),
    [
        ("my_handler.py", {"my_handler.py": b"raise SystemExit('handler code ran')"}),
        ("object_detector", {}),
        ("text_classifier", {}),
    ],
)
def test_other_handlers_are_a_clear_error(
    tmp_path: Path, handler: str, extra: dict[str, bytes]
) -> None:
    mar = write_mar(
        tmp_path / "h.mar", torchscript_bytes(classifier(2)), handler=handler, extra=extra
    )
    with pytest.raises(archive.ArchiveError) as err:
        import_mar(mar)
    message = str(err.value)
    assert f"handler {handler!r}" in message and "is not supported" in message
    assert "image_classifier" in message and "--from-torch" in message


def test_broken_archives_are_clear_errors(tmp_path: Path) -> None:
    not_zip = tmp_path / "a.mar"
    not_zip.write_bytes(os.urandom(64))
    with pytest.raises(archive.ArchiveError, match="not a zip archive"):
        import_mar(not_zip)
    no_manifest = tmp_path / "b.mar"
    with zipfile.ZipFile(no_manifest, "w") as z:
        z.writestr("model.pt", b"")
    with pytest.raises(archive.ArchiveError, match=r"no 'MAR-INF/MANIFEST\.json'"):
        import_mar(no_manifest)
    ts = torchscript_bytes(classifier(3))
    bad_labels = write_mar(tmp_path / "c.mar", ts, labels={"1": "a", "2": "b"})
    with pytest.raises(archive.ArchiveError, match=r"keys must be 0 \.\. 1"):
        import_mar(bad_labels)
    wrong_count = write_mar(tmp_path / "d.mar", ts, labels={"0": "a", "1": "b"})
    with pytest.raises(archive.ArchiveError, match="2 labels for 3 classes"):
        import_mar(wrong_count, trust_code=True)
    bad_name = write_mar(tmp_path / "e.mar", ts, name="no spaces allowed")
    with pytest.raises(archive.ArchiveError, match="--name"):
        import_mar(bad_name, trust_code=True)
    data, manifest, _ = import_mar(bad_name, name="renamed", version="7", trust_code=True)
    assert (manifest.name, manifest.version) == ("renamed", "7")
    assert archive.Manifest.from_json(manifest.to_json()) == manifest
    assert data.startswith(archive.MAGIC)


def test_imagenet_style_labels(tmp_path: Path) -> None:
    labels = {str(i): [f"n0{i}", name] for i, name in enumerate(LABELS)}
    mar = write_mar(tmp_path / "l.mar", torchscript_bytes(classifier(4)), labels=labels)
    _, manifest, exported = import_mar(mar, trust_code=True)
    assert manifest.labels == tuple(LABELS)
    assert manifest.preprocessing == archive.ImagePreprocessing()  # 256, 224, ImageNet
    assert exported.max_abs_diff < ATOL


def write_manifest(path: Path, inputs: list[object]) -> Path:
    raw = {
        "name": "twoheads",
        "version": "1",
        "inputs": inputs,
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "s", "datatype": "FP32", "shape": [-1, 1]},
        ],
    }
    path.write_text(json.dumps(raw))
    return path


def test_pack_from_torch_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pt = tmp_path / "m.pt"
    pt.write_bytes(torchscript_bytes(TwoHeads()))
    free = write_manifest(
        tmp_path / "free.json", [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    )
    out = str(tmp_path / "o.tsm")
    pack = ("model", "pack", "--trust-model-code", "-o", out, "--manifest")
    code, _, err = run(capsys, *pack, str(free), "--from-torch", str(pt))
    assert code == 2 and "needs a size for every dimension but the first" in err
    good = write_manifest(
        tmp_path / "good.json", [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    )
    code, _, err = run(capsys, "model", "pack", "--manifest", str(good), "-o", out)
    assert code == 2 and "either an ONNX model or --from-torch" in err
    not_ts = tmp_path / "n.pt"
    not_ts.write_bytes(state_dict_bytes(TwoHeads()))
    code, _, err = run(capsys, *pack, str(good), "--from-torch", str(not_ts))
    assert code == 2 and "is not a TorchScript model" in err
    assert not Path(out).exists()


def test_serving_never_imports_torch() -> None:
    """torch is a packing-time extra: the worker, the frontend and the stack never load it."""
    modules = (
        "trustserve.worker.main",
        "trustserve.frontend.inference",
        "trustserve.frontend.repository",
        "trustserve.stack.server",
        "trustserve.cli",
    )
    code = f"import sys, {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Small(torch.nn.Module):
    """Takes only 32x32 images: the stock 224 default does not fit it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_classifier_of_another_size_needs_a_manifest(tmp_path: Path) -> None:
    mar = write_mar(tmp_path / "s.mar", torchscript_bytes(_Small().eval()))
    with pytest.raises(archive.ArchiveError, match="give its tensors and preprocessing with"):
        import_mar(mar, trust_code=True)
    manifest = archive.Manifest.from_json(
        {
            "name": "small",
            "version": "2",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
            "preprocessing": {"resize": 36, "crop": 32},
        }
    )
    _, used, exported = import_mar(mar, manifest=manifest, trust_code=True)
    assert used.preprocessing == archive.ImagePreprocessing(resize=36, crop=32)
    assert used.inputs == manifest.inputs and used.extra["mar_model"] == "torchscript"
    assert exported.max_abs_diff < ATOL
