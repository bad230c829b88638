"""PyTorch models in: TorchScript (or an eager module) exported to ONNX with torch itself.

Everything here that loads or runs a model is called in the sandboxed child of
:mod:`trustserve.models.convert_child` (:func:`convert_here`), never in the process of
the command; :func:`pack_torchscript` is the entry point that starts it, once the
caller has the user's trust flag. torch is an optional extra
(``pip install 'trustserve[torch]'``), needed only here, at packing time: the
worker serves the ONNX result and never imports torch. The exporter is torch's
TorchScript-based one (``dynamo=False``): the only one that takes a
``ScriptModule``, and it needs no other package.

The export needs example inputs: their shapes and datatypes come from the
manifest (the batch dimension, ``-1`` first, stays free in the ONNX graph;
every other dimension needs a size). After the export, torch and ONNX Runtime
both run the same random batch and the largest difference is reported; over
the tolerance the export is refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trustserve import archive
from trustserve.archive import Manifest
from trustserve.errors import ArchiveError, ConfigError

OPSET = 17
IMAGE_SHAPE = (-1, 3, 224, 224)  # TorchServe's stock image_classifier
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
        raise ArchiveError(
            f"{what} is not a TorchScript model, or its loading code failed in the sandbox "
            f"({_first_line(exc)})"
        ) from None
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
            raise ArchiveError(
                f"torch cannot export the model to ONNX: {_first_line(exc)}"
            ) from None
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


TRUST_FLAG = "--trust-model-code"


def refuse_untrusted(what: str, kind: str) -> None:
    """The one refusal for a model whose code the user has not said they trust."""
    runs = {
        "torchscript": "loads and runs the TorchScript program inside it",
        "eager": "RUNS THE ARCHIVE'S PYTHON CODE (its model file) and unpickles its weights",
    }[kind]
    raise ArchiveError(
        f"{what} holds a{'n' if kind == 'eager' else ''} {kind} model: converting it {runs} "
        f"(in a sandbox without network that can write nothing of yours). Only if you trust "
        f"whoever made it, pass {TRUST_FLAG}"
    )


def pack_torchscript(
    data: bytes, manifest: Manifest, what: str, *, trust_code: bool = False, sandbox: bool = True
) -> tuple[bytes, Exported]:
    """The ``.tsm`` archive bytes for a TorchScript model described by ``manifest``.

    Refused unless ``trust_code``; the model is loaded, checked and exported only in
    the sandboxed child (:func:`trustserve.models.convert.convert`).
    """
    from trustserve.models.convert import convert
    from trustserve.models.packing import pack_model

    if not trust_code:
        refuse_untrusted(what, "torchscript")
    done = convert(data, what, manifest=manifest.to_json(), sandbox=sandbox)
    exported = Exported(done.onnx_bytes, done.max_abs_diff)
    return pack_model(exported.onnx_bytes, manifest), exported


def convert_here(
    work: Path, what: str, manifest_json: dict[str, Any] | None
) -> tuple[bytes, float, int | None]:
    """The child's part: load ``WORK/model.bin`` (eager with ``WORK/model.py``), check, export.

    Returns the ONNX bytes, the largest torch/ONNX Runtime difference, and the class
    count when there was no manifest (a stock image classifier).
    """
    from trustserve.models.torchscript_ops import check

    data = (work / "model.bin").read_bytes()
    source = work / "model.py"
    if source.exists():
        module = load_eager(source, data, what)
    else:
        module = load_torchscript(data, what)
        check(module, what)
    classes = None
    if manifest_json is None:
        classes = count_classes(module, what)
        manifest_json = {
            "name": "model",
            "version": "1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(IMAGE_SHAPE)}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, classes]}],
        }
    exported = export(module, Manifest.from_json(manifest_json))
    return exported.onnx_bytes, exported.max_abs_diff, classes


def count_classes(module: Any, what: str) -> int:
    """The stock image classifier's class count: one zero image in, one [1, classes] row out."""
    torch = torch_module()
    with torch.no_grad():
        try:
            out = module(torch.zeros(1, *IMAGE_SHAPE[1:]))
        except Exception as exc:  # the model's own code raises anything
            raise ArchiveError(
                f"{what}: the model does not take a [1, 3, 224, 224] image batch "
                f"({_first_line(exc)}); give its tensors and preprocessing with --manifest"
            ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ArchiveError(
            f"{what}: an image_classifier model must return one [batch, classes] tensor"
        )
    return int(out.shape[1])


def load_eager(source: Path, state_dict: bytes, what: str) -> Any:
    """Runs the model file (trusted by the user's flag) and loads its state dict, weights only."""
    torch = torch_module()
    module_name = f"trustserve_mar_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, source)
    if spec is None or spec.loader is None:
        raise ArchiveError(f"{what}: cannot load its model file")
    code = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(code)
    except Exception as exc:  # the archive's code raises anything
        raise ArchiveError(f"{what}: its model file fails to import: {exc!r}") from None
    classes = [
        c
        for c in vars(code).values()
        if isinstance(c, type) and issubclass(c, torch.nn.Module) and c.__module__ == module_name
    ]
    if len(classes) != 1:
        raise ArchiveError(
            f"{what}: the model file must define exactly one torch.nn.Module class "
            f"(it defines {len(classes)})"
        )
    try:
        state = torch.load(io.BytesIO(state_dict), map_location="cpu", weights_only=True)
        net = classes[0]()
        net.load_state_dict(state)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError and more
        raise ArchiveError(
            f"{what}: cannot load its state dict into the model: {_first_line(exc)}"
        ) from None
    net.eval()
    return net


def _first_line(exc: BaseException) -> str:
    """The line of an error that says what failed (for TorchScript's: its last line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
