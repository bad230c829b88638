"""A PyTorch model to ONNX in a sandboxed child process: the only place an archive's code runs.

Loading TorchScript runs the archive's program (``__setstate__`` methods at load,
``forward`` when the export traces and checks it); an eager model's file is
Python. So :func:`convert` (called only once the user has passed the trust flag)
writes the model into a fresh private work directory and runs
``python -m trustserve.models.convert_child WORK`` with a minimal environment (no
inherited variables but ``PATH``, ``PYTHONPATH`` and the locale; ``HOME`` and
``TMPDIR`` are the work directory). The child (:mod:`trustserve.models.convert_child`),
before it imports numpy or torch:

1. confines itself (:mod:`trustserve.models.sandbox`): it can write only ``WORK``,
   read only the Python installation and system libraries, open no socket and
   start no program;
2. loads the model (``torch.jit.load``, or the eager model file plus a
   ``weights_only`` state dict);
3. for TorchScript, refuses any op that is not tensor math
   (:mod:`trustserve.models.torchscript_ops`), before anything is run;
4. for a stock image classifier without a manifest, runs one zero image to count
   the classes; exports to ONNX and compares torch with ONNX Runtime;
5. writes ``model.onnx`` and ``result.json`` (or ``error.json``) into ``WORK``.

The parent reads back only those two regular files (no symlinks, size-checked),
treats their contents as the archive's (untrusted) output, and shows a child's
error as one line without control characters. ``sandbox=False`` runs the same
child unconfined (the op check still applies): only for systems where no sandbox
can be made, behind a loud flag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustserve.errors import ArchiveError, ConfigError, TrustserveError, error_class

MAX_ONNX = 8 * 1024 * 1024 * 1024
MAX_RESULT = 64 * 1024
_ENV_KEPT = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE")
NO_SANDBOX_FLAG = "--insecure-no-sandbox"


@dataclass(frozen=True)
class Converted:
    onnx_bytes: bytes
    max_abs_diff: float  # torch vs ONNX Runtime on the check batch
    classes: int | None  # counted by a zero image when no manifest was given


def convert(
    serialized: bytes,
    what: str,
    *,
    manifest: dict[str, Any] | None,
    model_source: bytes | None = None,
    sandbox: bool = True,
) -> Converted:
    """Export a TorchScript (or, with ``model_source``, an eager) model in the sandbox.

    ``manifest`` gives the tensors (JSON form); ``None`` means TorchServe's stock image
    classifier: one FP32 ``[-1,3,224,224]`` input, one ``[-1,classes]`` output.
    """
    if sandbox:
        reason = _sandbox_unavailable()
        if reason is not None:
            raise ConfigError(
                f"cannot convert {what} safely: {reason}. Without a sandbox the model's code "
                f"runs with your rights; to do that anyway, pass {NO_SANDBOX_FLAG}"
            )
    work = Path(tempfile.mkdtemp(prefix="trustserve-convert-"))
    try:
        (work / "model.bin").write_bytes(serialized)
        if model_source is not None:
            (work / "model.py").write_bytes(model_source)
        request = {"what": what, "manifest": manifest, "sandbox": sandbox}
        (work / "request.json").write_text(json.dumps(request))
        env = {k: os.environ[k] for k in _ENV_KEPT if k in os.environ}
        env.update(HOME=str(work), TMPDIR=str(work), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(
            [sys.executable, "-m", "trustserve.models.convert_child", str(work)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return _result(work, proc, what)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sandbox_unavailable() -> str | None:
    from trustserve.models.sandbox import unavailable

    return unavailable()


def _result(work: Path, proc: subprocess.CompletedProcess[bytes], what: str) -> Converted:
    error = _read(work / "error.json", MAX_RESULT)
    if error is not None:
        raise _error(error, what)
    result = _read(work / "result.json", MAX_RESULT)
    onnx_bytes = _read(work / "model.onnx", MAX_ONNX)
    if proc.returncode != 0 or result is None or onnx_bytes is None:
        how = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        last = _one_line(proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""])
        raise ArchiveError(f"{what}: the conversion process {how}" + (f": {last}" if last else ""))
    try:
        raw = json.loads(result)
        diff = float(raw["max_abs_diff"])
        classes = raw.get("classes")
        if classes is not None and (not isinstance(classes, int) or classes < 1):
            raise ValueError(classes)
    except (ValueError, KeyError, TypeError):
        raise ArchiveError(f"{what}: the conversion process gave a malformed result") from None
    return Converted(onnx_bytes, diff, classes)


def _read(path: Path, limit: int) -> bytes | None:
    """A regular file the child wrote, never through a link, at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArchiveError(f"the conversion result {path.name} is not a file: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not _is_plain(st.st_mode, st.st_nlink) or st.st_size > limit:
            raise ArchiveError(f"the conversion result {path.name} is not a plain file or too big")
        return f.read(limit)


def _is_plain(mode: int, links: int) -> bool:
    import stat

    return stat.S_ISREG(mode) and links == 1


def _error(raw: bytes, what: str) -> TrustserveError:
    try:
        body = json.loads(raw)
        cls = error_class(str(body["code"]))
        message = _one_line([str(body["message"])])
    except (ValueError, KeyError, TypeError):
        return ArchiveError(f"{what}: the conversion failed (its error report is malformed)")
    if not issubclass(cls, ArchiveError | ConfigError):
        cls = ArchiveError
    return cls(message)


def _one_line(lines: list[str]) -> str:
    """Text from the child as one printable line of at most 500 characters."""
    text = " ".join(lines).strip()
    return "".join(c if c.isprintable() else "?" for c in text)[:500]
