"""``trustserve demo-models`` and the ``trustserve model`` group (pack, import-mar, inspect,
quantize).

``register`` returns the ``model`` group; other areas' ``model`` subcommands (``model
encrypt``, the KMS's) are added to it by ``trustserve.cli``, which composes the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trustserve import archive, files
from trustserve.errors import InvalidInput
from trustserve.models.calibration import (
    Array,
    batches,
    folder_samples,
    labelled_set,
    synthetic_image_batch,
)
from trustserve.models.packing import load_manifest, pack_model

SubParsers = Any  # argparse's _SubParsersAction is private


def register(subparsers: SubParsers) -> dict[str, SubParsers]:
    demo = subparsers.add_parser(
        "demo-models",
        help="build the demo models (resnet50 INT8+FP32, digits) into a model store",
    )
    demo.add_argument("dir", type=Path, help="model store directory to write")
    demo.add_argument("--skip-int8", action="store_true", help="do not build the INT8 resnet50")
    demo.set_defaults(func=_demo_models)

    group = subparsers.add_parser("model", help="model archives and quantization")
    model = group.add_subparsers(dest="model_command", required=True)
    pack = model.add_parser("pack", help="pack an ONNX model and its manifest into an archive")
    pack.add_argument("model", type=Path, nargs="?", help="the ONNX model")
    pack.add_argument(
        "--from-torch",
        type=Path,
        metavar="MODEL.pt",
        help="a TorchScript model instead: exported to ONNX with torch (trustserve[torch]) in a "
        "sandbox; the manifest gives its input shapes and datatypes; needs --trust-model-code",
    )
    trust_flags(pack)
    pack.add_argument("--manifest", type=Path, required=True, help="manifest .json or .yaml")
    pack.add_argument("-o", "--output", type=Path, required=True, help="archive to write (.tsm)")
    pack.set_defaults(func=_pack)

    mar = model.add_parser(
        "import-mar",
        help="a TorchServe .mar (TorchScript or eager model, stock image_classifier handler) "
        "into an archive; needs --trust-model-code",
    )
    mar.add_argument("mar", type=Path, help="the TorchServe model archive")
    mar.add_argument("-o", "--output", type=Path, required=True, help="archive to write (.tsm)")
    trust_flags(mar, "--trust-mar-code")
    mar.add_argument("--manifest", type=Path, help="manifest whose tensors to use instead")
    mar.add_argument("--name", help="model name (default: the archive's modelName)")
    mar.add_argument("--version", help="model version (default: the archive's modelVersion)")
    mar.set_defaults(func=_import_mar)

    inspect = model.add_parser("inspect", help="print an archive's public header as JSON")
    inspect.add_argument("archive", type=Path)
    inspect.set_defaults(func=_inspect)

    quant = model.add_parser(
        "quantize", help="INT8 static quantization (ONNX Runtime QDQ, per-channel)"
    )
    quant.add_argument("model", type=Path, help="the FP32 ONNX model")
    quant.add_argument("-o", "--output", type=Path, required=True, help="INT8 ONNX model to write")
    quant.add_argument(
        "--calibration",
        required=True,
        metavar="DIR|N",
        help="folder of images / .npy samples, or N synthetic samples",
    )
    quant.add_argument(
        "--manifest",
        type=Path,
        help="manifest (.json, .yaml or a .tsm archive) whose image preprocessing to use",
    )
    quant.add_argument(
        "--validate",
        type=Path,
        metavar="DIR",
        help="labelled set (one subfolder per label): report FP32 vs INT8 accuracy",
    )
    quant.add_argument("--batch-size", type=int, default=8, help="calibration batch size")
    quant.add_argument(
        "--reduce-range", action="store_true", help="7-bit weights (for CPUs without VNNI)"
    )
    quant.add_argument("--threads", type=int, default=2, help="threads for --validate")
    quant.set_defaults(func=_quantize)
    return {"model": model}


def trust_flags(parser: argparse.ArgumentParser, *aliases: str) -> None:
    parser.add_argument(
        "--trust-model-code",
        *aliases,
        dest="trust_code",
        action="store_true",
        help="convert the model although this RUNS ITS CODE (TorchScript ops checked against a "
        "tensor-math allowlist; an eager .mar's Python file) in a sandbox (see docs/models.md)",
    )
    parser.add_argument(
        "--insecure-no-sandbox",
        action="store_true",
        help="INSECURE: convert without the sandbox (only where none can be made): the model's "
        "code can then write your files and use the network",
    )


def warn_trust(args: argparse.Namespace, source: Path) -> None:
    if args.trust_code:
        print(f"!!! --trust-model-code: running the code inside {source} (sandboxed)",
              file=sys.stderr)  # fmt: skip
    if args.insecure_no_sandbox:
        print(
            f"!!! --insecure-no-sandbox: {source}'s code runs WITHOUT A SANDBOX, with your "
            "rights: it can write your files and use the network",
            file=sys.stderr,
        )


def _demo_models(args: argparse.Namespace) -> int:

    from trustserve.models.demo import build_demo_models  # pulls in scikit-learn

    start = time.monotonic()
    paths = build_demo_models(
        args.dir, int8=not args.skip_int8, log=lambda m: print(m, flush=True), progress=True
    )
    print(f"demo models in {args.dir} ({time.monotonic() - start:.1f}s):")
    for name, path in paths.items():
        if path.suffix == ".tsm":
            print(f"  {name}: {path}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.from_torch is None):
        raise InvalidInput("model pack needs either an ONNX model or --from-torch MODEL.pt")
    manifest = load_manifest(args.manifest)
    source = args.model or args.from_torch
    try:
        model_bytes = source.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None
    if args.from_torch is not None:
        from trustserve.models.torch_import import pack_torchscript

        warn_trust(args, source)
        packed, exported = pack_torchscript(
            model_bytes,
            manifest,
            source.name,
            trust_code=args.trust_code,
            sandbox=not args.insecure_no_sandbox,
        )
        print(f"exported {source} to ONNX: {_agreement(exported.max_abs_diff)}")
    else:
        packed = pack_model(model_bytes, manifest)
    files.write_atomic(args.output, packed)
    print(f"packed {manifest.name} version {manifest.version} into {args.output}")
    return 0


def _import_mar(args: argparse.Namespace) -> int:
    from trustserve.models.mar import import_mar

    manifest = load_manifest(args.manifest) if args.manifest else None
    warn_trust(args, args.mar)
    packed, used, exported = import_mar(
        args.mar,
        trust_code=args.trust_code,
        sandbox=not args.insecure_no_sandbox,
        manifest=manifest,
        name=args.name,
        version=args.version,
    )
    files.write_atomic(args.output, packed)
    print(f"exported {args.mar} to ONNX: {_agreement(exported.max_abs_diff)}")
    print(f"packed {used.name} version {used.version} into {args.output}")
    return 0


def _agreement(diff: float) -> str:
    from trustserve.models.torch_import import CHECK_BATCH

    return f"torch and ONNX Runtime agree within {diff:.2g} on a random batch of {CHECK_BATCH}"


def _inspect(args: argparse.Namespace) -> int:
    head = archive.read_header(args.archive)
    payload = args.archive.stat().st_size - len(head.header_bytes)
    out = {
        "manifest": head.manifest.to_json(),
        "encryption": head.encryption,
        "payload_bytes": payload,
    }
    print(_pretty(out))
    return 0


def _pretty(value: Any, indent: str = "") -> str:
    """JSON with one key per line, but lists of plain values (shapes, labels) kept on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [inner + _pretty(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value)


def _quantize(args: argparse.Namespace) -> int:
    from trustserve.models.quantize import compare, is_quantized, model_input, quantize_model

    if args.batch_size < 1:
        raise InvalidInput("--batch-size must be at least 1")
    manifest = load_manifest(args.manifest) if args.manifest else None
    pre = manifest.preprocessing if manifest else None
    try:
        model = onnx.load(str(args.model), load_external_data=False)
    except Exception as exc:  # onnx raises OSError, protobuf DecodeError and more
        raise InvalidInput(f"cannot load {args.model}: {str(exc).splitlines()[0]}") from None
    _, shape = model_input(model)
    sample_shape = shape[1:]
    source: str = args.calibration
    total: int | None = None
    if source.isdigit():
        total = int(source)
        if total < 1:
            raise InvalidInput("--calibration N needs N >= 1")
        samples: Iterator[Array] = _synthetic(total, pre, sample_shape)
        print(f"calibrating on {total} synthetic samples", file=sys.stderr)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise InvalidInput(f"--calibration {source}: neither a directory nor a count")
        samples = folder_samples(folder, pre, sample_shape)
    used = quantize_model(
        args.model,
        args.output,
        batches(samples, args.batch_size),
        total=total,
        reduce_range=args.reduce_range,
    )
    quantized = onnx.load(str(args.output), load_external_data=False)
    state = "QDQ INT8" if is_quantized(quantized) else "nothing quantizable found;"
    size = args.output.stat().st_size / 1e3
    print(f"wrote {args.output}: {state} {size:,.0f} kB, calibrated on {used} samples")
    if args.validate:
        labels = manifest.labels if manifest else None
        x, y = labelled_set(args.validate, pre, sample_shape, labels)
        result = compare(args.model, args.output, x, y, threads=args.threads)
        for line in result.lines():
            print(line)
    return 0


def _synthetic(
    count: int, pre: archive.ImagePreprocessing | None, shape: tuple[int, ...]
) -> Iterator[Array]:
    """Synthetic images through the preprocessing; else standard-normal samples (a fallback)."""
    if pre is not None:
        for start in range(0, count, 8):
            yield synthetic_image_batch(pre, range(start, min(start + 8, count)))
        return
    if any(d < 0 for d in shape):
        raise InvalidInput(
            f"cannot make synthetic samples for input shape {list(shape)} with free dimensions; "
            "give a calibration folder"
        )
    rng = np.random.default_rng(0)
    for start in range(0, count, 64):
        yield rng.standard_normal((min(64, count - start), *shape), dtype=np.float32)
