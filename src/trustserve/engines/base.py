"""The engine seam: a loaded model that maps named numpy arrays to named numpy arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from trustserve.archive import Manifest

Tensors = dict[str, npt.NDArray[np.generic]]


class Engine(Protocol):
    name: str

    def infer(self, inputs: Tensors) -> Tensors: ...


class EngineFactory(Protocol):
    def __call__(self, model_bytes: bytes, manifest: Manifest, threads: int) -> Engine: ...
