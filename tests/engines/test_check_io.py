"""``check_io``: an archive whose manifest does not describe its model is refused at load."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import tiny_manifest, tiny_onnx
from trustserve.engines import load_engine
from trustserve.engines.base import check_io
from trustserve.errors import ArchiveError


def test_matching_names_pass_and_extra_model_outputs_are_allowed() -> None:
    manifest = tiny_manifest()
    inputs = [t.name for t in manifest.inputs]
    outputs = [t.name for t in manifest.outputs]
    check_io(manifest, inputs, outputs)
    check_io(manifest, inputs, [*outputs, "an_unused_output"])


def test_a_wrong_input_name_is_refused_naming_both_sides() -> None:
    manifest = tiny_manifest()
    with pytest.raises(ArchiveError) as refused:
        check_io(manifest, ["pixels"], [t.name for t in manifest.outputs])
    assert "model inputs are ['pixels']" in str(refused.value)
    assert "'tiny'" in str(refused.value)


def test_a_manifest_output_the_model_lacks_is_refused() -> None:
    manifest = tiny_manifest()
    with pytest.raises(ArchiveError, match="are not model outputs"):
        check_io(manifest, [t.name for t in manifest.inputs], [])


def test_onnxruntime_engine_refuses_a_manifest_that_does_not_fit() -> None:
    manifest = tiny_manifest()
    bad = tiny_manifest(inputs=[{"name": "other", "datatype": "FP32", "shape": [-1, 4]}])
    assert load_engine("onnxruntime", tiny_onnx(), manifest, 1).name == "onnxruntime"
    with pytest.raises(ArchiveError, match="model inputs are"):
        load_engine("onnxruntime", tiny_onnx(), bad, 1)


def test_the_openvino_engine_does_not_load_onnxruntime() -> None:
    code = "import sys, trustserve.engines.openvino; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
