"""The conversion child: ``python -m trustserve.models.convert_child WORK``.

Started only by :func:`trustserve.models.convert.convert`, which states the protocol: confine
(:mod:`trustserve.models.sandbox`), load, check, export
(:func:`trustserve.models.torch_import.convert_here`), then report through ``WORK/model.onnx``
and ``WORK/result.json``, or ``WORK/error.json`` for a refusal the parent shows as one line.
A module of its own so that the parent's module never imports the torch side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from trustserve.errors import ConfigError, TrustserveError


def main(work: Path) -> int:
    """Confine, load, check, export, report: 0 once ``model.onnx`` and ``result.json`` exist."""
    request = json.loads((work / "request.json").read_text())
    what = str(request["what"])
    try:
        if request["sandbox"]:
            from trustserve.models.sandbox import SandboxError, confine

            try:
                confine(work)
            except SandboxError as exc:
                raise ConfigError(f"cannot make the converter's sandbox: {exc}") from None
        from trustserve.models.torch_import import convert_here

        onnx_bytes, diff, classes = convert_here(work, what, request["manifest"])
    except TrustserveError as exc:
        _write(work / "error.json", {"code": exc.code, "message": str(exc)})
        return 2
    (work / "model.onnx").write_bytes(onnx_bytes)
    _write(work / "result.json", {"max_abs_diff": diff, "classes": classes})
    return 0


def _write(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
