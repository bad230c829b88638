"""The TorchScript op allowlist: common layers pass, ops that touch the world are named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustserve.errors import ArchiveError
from trustserve.models.torchscript_ops import check, refused_ops

COMMON = [
    nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4), nn.Dropout(), nn.Softmax(-1),
    ),
    nn.TransformerEncoderLayer(16, 4, 32, batch_first=True),
    nn.LSTM(4, 8, batch_first=True),
    nn.GRU(4, 8),
    nn.Sequential(
        nn.Conv1d(3, 4, 3), nn.GELU(), nn.LayerNorm(4), nn.Hardswish(), nn.SiLU(),
        nn.Upsample(scale_factor=2, mode="bilinear"), nn.GroupNorm(2, 4), nn.Embedding(10, 4),
        nn.ConvTranspose2d(4, 4, 2), nn.AvgPool2d(2), nn.PReLU(), nn.ZeroPad2d(1),
    ),
]  # fmt: skip


@pytest.mark.parametrize("module", COMMON, ids=lambda m: type(m).__name__)
def test_common_layers_are_tensor_math(module: nn.Module) -> None:
    assert refused_ops(torch.jit.script(module.eval())) == {}


class Prints(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("hello from the model")
        return x


class ReadsAFile(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file("/etc/hostname", size=1, dtype=torch.uint8)


class Outer(nn.Module):
    """The op is in a submodule, inside an if: inlining and nested blocks are walked."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ReadsAFile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.inner(x)
        return x


@pytest.mark.parametrize(
    ("module", "op"), [(Prints(), "prim::Print"), (Outer(), "aten::from_file")]
)
def test_ops_outside_the_list_are_refused_by_name(module: nn.Module, op: str) -> None:
    with pytest.raises(ArchiveError, match=f"op {op} .* is not tensor math; refusing"):
        check(torch.jit.script(module), "m.pt")
