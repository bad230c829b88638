"""docs/models.md's marked commands: demo models, pack, inspect, quantize."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, DocShell, marked_blocks
from tests.docs.conftest import link_demo

DOC = ROOT / "docs" / "models.md"


@pytest.fixture
def shell(tmp_path: Path, demo_dir: Path) -> DocShell:
    (tmp_path / "work").mkdir()
    link_demo(demo_dir, tmp_path / "work" / "demo")
    # the quantize example names the demo store DIR
    return DocShell(cwd=tmp_path / "work", home=tmp_path / "home", substitutions={"DIR/": "demo/"})


def test_pack_and_inspect(shell: DocShell) -> None:
    out = shell.run(marked_blocks(DOC)["pack"])
    header = json.loads(out[out.index("{") :])  # after demo-models' summary lines
    manifest = header["manifest"]
    assert (manifest["name"], manifest["version"]) == ("mydigits", "1")
    assert manifest["labels"][:2] == ["zero", "one"]
    assert (shell.cwd / "mydigits.tsm").stat().st_size > 0


def test_quantize_prints_what_the_doc_shows(shell: DocShell) -> None:
    out = shell.run(marked_blocks(DOC)["quantize"])
    text = DOC.read_text()
    shown = text[text.index("wrote digits-int8.onnx") :].split("```")[0].splitlines()
    printed = out.splitlines()
    # the same lines in the same order; the figures may differ by CPU, except the sample counts
    assert [line.split(":")[0] for line in printed] == [line.split(":")[0] for line in shown]
    assert "samples: 360" in printed
    assert re.match(r"wrote digits-int8\.onnx: QDQ INT8 \d+ kB, calibrated on 1437 samples", out)
    fp32 = float(re.search(r"FP32 accuracy: ([\d.]+)%", out)[1])  # type: ignore[index]
    int8 = float(re.search(r"INT8 accuracy: ([\d.]+)%", out)[1])  # type: ignore[index]
    assert fp32 > 90 and abs(fp32 - int8) < 3


def test_the_int8_agreement_the_doc_quotes_is_what_the_build_records(demo_dir: Path) -> None:
    from trustserve import archive

    """The demo build is seeded throughout, so its figure is one number, quoted exactly."""
    text = DOC.read_text()
    quoted = re.search(r"agreement on synthetic images: (\d+\.\d)%", text)
    assert quoted, "models.md no longer quotes the INT8/FP32 agreement"
    recorded_as = re.search(r"`extra\.fp32_top1_agreement`: ([\d.]+)", text)
    assert recorded_as, "models.md no longer quotes the manifest's figure"
    parsed = archive.parse((demo_dir / "resnet50.tsm").read_bytes())
    recorded = float(parsed.manifest.extra["fp32_top1_agreement"])
    assert f"{100 * recorded:.1f}" == quoted[1], (recorded, quoted[0])
    assert recorded == float(recorded_as[1])
