"""Small PyTorch models and TorchServe ``.mar`` archives, made in the tests (no download)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch

LABELS = ["cat", "dog", "fish"]

# The eager model's source as a TorchServe model file. It tries to write the marker file: a
# test sees whether the code ran unasked, or ran outside the converter's sandbox.
EAGER_SOURCE = """
import pathlib
import torch

try:
    pathlib.Path({marker!r}).write_text("the archive's code ran")
except OSError:  # the converter's sandbox: nothing outside its work directory is writable
    pass


class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
"""


class TinyClassifier(torch.nn.Module):
    """Images [N,3,224,224] to 3 class scores: a convolution, a pooling, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TwoHeads(torch.nn.Module):
    """x [N,4] to y = tanh(xW + b) [N,2] and s = sum(x) [N,1]: two outputs, one input."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.lin(x)), x.sum(dim=1, keepdim=True)


def classifier(seed: int) -> TinyClassifier:
    torch.manual_seed(seed)
    return TinyClassifier().eval()


def torchscript_bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def state_dict_bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def write_mar(
    path: Path,
    serialized: bytes,
    *,
    name: str = "tinycls",
    version: str = "1.0",
    handler: str = "image_classifier",
    model_file: str | None = None,
    extra: dict[str, bytes] | None = None,
    labels: Any = None,
) -> Path:
    """A .mar as torch-model-archiver lays it out: MAR-INF/MANIFEST.json plus the files."""
    model: dict[str, str] = {
        "modelName": name,
        "modelVersion": version,
        "serializedFile": "model.pt" if model_file is None else "model.pth",
        "handler": handler,
    }
    if model_file is not None:
        model["modelFile"] = "model.py"
    manifest = {"createdOn": "01/01/2026 00:00:00", "runtime": "python", "model": model,
                "archiverVersion": "0.12.0"}  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        z.writestr(model["serializedFile"], serialized)
        if model_file is not None:
            z.writestr("model.py", model_file)
        if labels is not None:
            z.writestr("index_to_name.json", json.dumps(labels))
        for member, data in (extra or {}).items():
            z.writestr(member, data)
    return path
