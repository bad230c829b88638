"""Attack: a TorchScript model that writes a file of its choosing while it is converted.

TorchScript can call ``torch.from_file(path, shared=True, size=N)``, which creates
(or overwrites) ``path`` with the rights of whoever runs the program: a ``.pth`` in
site-packages or a shell rc file is code execution later. The attacker ships such a
model in a TorchServe ``.mar`` (``model import-mar``) or as a ``.pt``
(``model pack --from-torch``), in ``forward`` (run by the export) or in
``__setstate__`` (run by ``torch.jit.load`` itself).

Defence: nothing is loaded without ``--trust-model-code``; with it, the model is
loaded in a sandboxed child that can write only its own work directory, and a
``forward`` using an op that is not tensor math is refused before it runs.
Each case checks the file was not created.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from tests.models.torch_models import write_mar
from trustserve.cli import main


class WritesInForward(torch.nn.Module):
    """A classifier-shaped model whose forward maps (creating) a file with shared=True."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planted = torch.from_file(self.target, shared=True, size=64, dtype=torch.uint8)
        return x.flatten(1)[:, :3] + planted[0].float()


class WritesOnLoad(torch.nn.Module):
    """Harmless forward; its __setstate__, run by torch.jit.load, creates the file."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.planted = torch.zeros(8, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3]

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        self.planted = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)


def scripted(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def error_line(err: str) -> str:
    """The command's error: exactly one line after the trust warnings."""
    lines = [line for line in err.splitlines() if not line.startswith("!!!")]
    assert len(lines) == 1, err
    assert lines[0].startswith("trustserve: error: ")
    return lines[0]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "planted" / "sitecustomize.pth"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.json"
    raw = {
        "name": "evil",
        "version": "1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
    }
    path.write_text(json.dumps(raw))
    return path


def test_import_mar_without_the_flag_loads_nothing(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target.parent.mkdir()
    mar = write_mar(tmp_path / "evil.mar", scripted(WritesInForward(str(target))))
    out = tmp_path / "evil.tsm"
    code, err = run(capsys, "model", "import-mar", str(mar), "-o", str(out))
    assert code == 2
    line = error_line(err)
    assert "TorchScript" in line and "--trust-model-code" in line
    assert not target.exists()
    assert not out.exists()


def test_pack_from_torch_without_the_flag_loads_nothing(
    tmp_path: Path, target: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target.parent.mkdir()
    pt = tmp_path / "evil.pt"
    pt.write_bytes(scripted(WritesInForward(str(target))))
    out = tmp_path / "evil.tsm"
    argv = ("model", "pack", "--from-torch", str(pt), "--manifest", str(manifest), "-o", str(out))
    code, err = run(capsys, *argv)
    assert code == 2
    assert "--trust-model-code" in error_line(err)
    assert not target.exists()
    assert not out.exists()


@pytest.mark.parametrize("command", ["import-mar", "pack"])
def test_with_the_flag_from_file_is_refused_as_not_tensor_math(
    tmp_path: Path,
    target: Path,
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    target.parent.mkdir()
    data = scripted(WritesInForward(str(target)))
    out = tmp_path / "evil.tsm"
    if command == "import-mar":
        mar = write_mar(tmp_path / "evil.mar", data)
        argv: tuple[str, ...] = ("model", "import-mar", str(mar))
    else:
        pt = tmp_path / "evil.pt"
        pt.write_bytes(data)
        argv = ("model", "pack", "--from-torch", str(pt), "--manifest", str(manifest))
    code, err = run(capsys, *argv, "-o", str(out), "--trust-model-code")
    assert code == 2
    line = error_line(err)
    assert "op aten::from_file" in line and "is not tensor math; refusing" in line
    assert not target.exists()
    assert not out.exists()


def test_setstate_writing_on_load_is_stopped_by_the_sandbox(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The op check comes after the load, and the load already ran __setstate__: only the
    sandbox stands between this archive and the file."""
    target.parent.mkdir()
    mar = write_mar(tmp_path / "onload.mar", scripted(WritesOnLoad(str(target))))
    out = tmp_path / "onload.tsm"
    code, err = run(capsys, "model", "import-mar", str(mar), "-o", str(out), "--trust-model-code")
    assert code == 2
    line = error_line(err)
    assert "loading code failed in the sandbox" in line and "Permission denied" in line
    assert not target.exists()
    assert not out.exists()


def test_an_existing_file_is_not_overwritten_either(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target.parent.mkdir()
    before = b"the user's own file\n"
    target.write_bytes(before)
    mar = write_mar(tmp_path / "onload.mar", scripted(WritesOnLoad(str(target))))
    code, _ = run(
        capsys, "model", "import-mar", str(mar), "-o", str(tmp_path / "o.tsm"), "--trust-model-code"
    )
    assert code == 2
    assert target.read_bytes() == before
