"""PyTorch models in: TorchScript (or an eager module) exported to ONNX with torch itself.

torch is an optional extra (``pip install 'trustserve[torch]'``), needed only
here, at packing time: the worker serves the ONNX result and never imports
torch. The exporter is torch's TorchScript-based one (``dynamo=False``): the
only one that takes a ``ScriptModule``, and it needs no other package.

The export needs example inputs: their shapes and datatypes come from the
manifest (the batch dimension, ``-1`` first, stays free in the ONNX graph;
every other dimension needs a size). After the export, torch and ONNX Runtime
both run the same random batch and the largest difference is reported; over
the tolerance the export is refused.
"""

from __future__ import annotations

import importlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustserve import archive
from trustserve.archive import Manifest
from trustserve.errors import ArchiveError, ConfigError

OPSET = 17
ATOL = 1e-4  # absolute tolerance, FP32, torch vs ONNX Runtime on the check batch
RTOL = 1e-3
CHECK_BATCH = 2


@dataclass(frozen=True)
class Exported:
    onnx_bytes: bytes
    max_abs_diff: float  # torch vs ONNX Runtime on a random batch of CHECK_BATCH


def torch_module() -> Any:
    """torch, or a clear error telling how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise ConfigError(
            "PyTorch import needs torch: pip install 'trustserve[torch]' "
            "(only to convert models; serving never needs it)"
        ) from None


def load_torchscript(data: bytes, what: str) -> Any:
    """A TorchScript module from bytes (``torch.jit.save`` output), on the CPU, in eval mode."""
    torch = torch_module()
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError and more
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArchiveError(f"{what} is not a TorchScript model ({first})") from None
    module.eval()
    return module


def example_inputs(manifest: Manifest, batch: int, seed: int = 0) -> list[np.ndarray]:
    """One array per manifest input: random values, the batch dimension set to ``batch``."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in manifest.inputs:
        if any(d == -1 for d in t.shape[1:]):
            raise ArchiveError(
                f"input {t.name!r} shape {list(t.shape)}: the export needs a size for every "
                "dimension but the first (the batch one); give them in the manifest"
            )
        shape = (batch if t.shape[0] == -1 else t.shape[0], *t.shape[1:])
        dtype = np.dtype(archive.DATATYPES[t.datatype])
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            arrays.append(rng.integers(0, 10, shape).astype(dtype))
    return arrays


def export(module: Any, manifest: Manifest) -> Exported:
    """The module as ONNX with the manifest's tensor names, checked against torch's answers."""
    torch = torch_module()
    examples = example_inputs(manifest, CHECK_BATCH)
    names_in = [t.name for t in manifest.inputs]
    names_out = [t.name for t in manifest.outputs]
    dynamic = {
        t.name: {0: "batch"} for t in (*manifest.inputs, *manifest.outputs) if t.shape[0] < 0
    }
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(a) for a in examples),
                buf,
                input_names=names_in,
                output_names=names_out,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many kinds; say the first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArchiveError(f"torch cannot export the model to ONNX: {first}") from None
        expected = _as_list(module(*(torch.from_numpy(a) for a in examples)))
    onnx_bytes = buf.getvalue()
    got = _run_onnx(onnx_bytes, names_in, examples)
    if len(got) != len(expected):
        raise ArchiveError(
            f"the model returns {len(expected)} outputs, the manifest names {len(names_out)}"
        )
    worst = 0.0
    for name, want, have in zip(names_out, expected, got, strict=True):
        want_np = want.detach().numpy()
        if want_np.shape != have.shape:
            raise ArchiveError(
                f"output {name!r}: torch gives shape {list(want_np.shape)}, "
                f"the ONNX export {list(have.shape)}"
            )
        if want_np.size:
            diff = np.abs(want_np.astype(np.float64) - have.astype(np.float64))
            worst = max(worst, float(diff.max()))
        if not np.allclose(have, want_np, atol=ATOL, rtol=RTOL):
            raise ArchiveError(
                f"output {name!r}: the ONNX export differs from torch by up to "
                f"{worst:.3g} (tolerance {ATOL} + {RTOL} x |value|): not packed"
            )
    return Exported(onnx_bytes, worst)


def _as_list(out: Any) -> list[Any]:
    if isinstance(out, tuple | list):
        return list(out)
    if isinstance(out, dict):
        raise ArchiveError("the model returns a dict: only tensors or tuples of tensors export")
    return [out]


def _run_onnx(onnx_bytes: bytes, names: list[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        outputs = session.run(None, dict(zip(names, arrays, strict=True)))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0]
        raise ArchiveError(f"ONNX Runtime cannot run the exported model: {first}") from None
    return [np.asarray(o) for o in outputs]


def pack_torchscript(data: bytes, manifest: Manifest, what: str) -> tuple[bytes, Exported]:
    """The ``.tsm`` archive bytes for a TorchScript model described by ``manifest``."""
    from trustserve.models.packing import pack_model

    exported = export(load_torchscript(data, what), manifest)
    return pack_model(exported.onnx_bytes, manifest), exported
