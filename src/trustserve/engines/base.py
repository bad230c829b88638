"""The engine seam: a loaded model that maps named numpy arrays to named numpy arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from trustserve.archive import Manifest
from trustserve.errors import ArchiveError

Tensors = dict[str, npt.NDArray[np.generic]]


class Engine(Protocol):
    name: str

    def infer(self, inputs: Tensors) -> Tensors: ...


class EngineFactory(Protocol):
    def __call__(self, model_bytes: bytes, manifest: Manifest, threads: int) -> Engine: ...


def check_io(manifest: Manifest, inputs: list[str], outputs: list[str]) -> None:
    """The manifest must name exactly the model's inputs, and outputs the model has."""
    problems = []
    if sorted(inputs) != sorted(t.name for t in manifest.inputs):
        problems.append(
            f"model inputs are {sorted(inputs)}, manifest says "
            f"{sorted(t.name for t in manifest.inputs)}"
        )
    if missing := {t.name for t in manifest.outputs} - set(outputs):
        problems.append(f"manifest outputs {sorted(missing)} are not model outputs {outputs}")
    if problems:
        raise ArchiveError(f"model '{manifest.name}': " + "; ".join(problems))
