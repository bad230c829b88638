"""``trustserve batch URL MODEL DIR -o results.jsonl``: score a folder through async jobs.

Each file of ``DIR`` (not its subfolders; hidden files skipped), in name order, is
one async job, sealed unless ``--standard``: images and ``.json`` bodies as
``predict`` sends them, ``.npy`` arrays as the model's first input. At most
``--max-in-flight`` jobs are submitted and not yet answered at any time.

The output has one JSON line per input, written whole and flushed as each answer
comes: ``{"input": NAME, "outputs": ...}`` or ``{"input": NAME, "error": {"code",
"message"}}`` (a failed input is a line, not a crash). A rerun skips every input that
already has a line (delete an error line to retry it); a line cut short by a crash
is dropped first (``done_inputs``). The file holds decrypted outputs: it is created
0600. Exit status: 0 when every input has an answer, 1 when some
failed, 2 when the server's attestation is refused (nothing sent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from trustserve.client.answers import IMAGE_SUFFIXES, input_name, top_k, top_labels
from trustserve.client.flags import add_client_args, open_client, positive, refused
from trustserve.client.sdk import ServerError, TrustserveClient
from trustserve.errors import AttestationRefused, InvalidInput, TrustserveError

SUFFIXES = {*IMAGE_SUFFIXES, ".json", ".npy"}


def inputs_of(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def done_inputs(output: Path) -> set[str]:
    """Names that already have a complete line.

    A last line without its newline is kept (the newline added) when it is a whole
    result line, dropped when it is one cut short by a crash, and anything else stops
    the run with the file untouched: it is not a results file of ours.
    """
    if not output.exists():
        return set()
    data = output.read_bytes()
    cut = data.rfind(b"\n") + 1
    complete, rest = data[:cut], data[cut:]
    if rest:
        if _result_name(rest) is not None:
            with output.open("ab") as f:
                f.write(b"\n")
            complete += rest + b"\n"
        elif rest.startswith(RESULT_START):
            with output.open("r+b") as f:
                f.truncate(len(complete))
        else:
            raise InvalidInput(
                f"{output}: its last line is not a result line and has no newline; "
                "not a results file of trustserve batch? Name another -o file"
            )
    return {name for line in complete.splitlines() if (name := _result_name(line)) is not None}


RESULT_START = b'{"input": '  # how write_line begins every line


def _result_name(line: bytes) -> str | None:
    try:
        return str(json.loads(line)["input"])
    except (ValueError, KeyError, TypeError):
        return None  # not one of ours: kept, but no input is skipped for it


def open_results(output: Path) -> IO[bytes]:
    """``output`` for appending; created readable by its owner only (decrypted outputs)."""
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


class Scorer:
    """One input file to one answer line, through an async job."""

    def __init__(self, client: TrustserveClient, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self._input_name: str | None = None

    def line(self, path: Path) -> dict[str, Any]:
        try:
            return {"input": path.name, "outputs": self._score(path)}
        except ServerError as exc:
            return {"input": path.name, "error": {"code": exc.code, "message": exc.message}}
        except TrustserveError as exc:
            return {"input": path.name, "error": {"code": exc.code, "message": str(exc)}}
        except (OSError, ValueError) as exc:
            message = f"cannot read {path.name}: {exc}"
            return {"input": path.name, "error": {"code": InvalidInput.code, "message": message}}

    def _score(self, path: Path) -> Any:
        a, suffix = self.args, path.suffix.lower()
        if suffix not in SUFFIXES:
            raise InvalidInput("not an image (.jpg/.png), a .npy array or a .json body")
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if self._input_name is None:
                self._input_name = input_name(self.client, a.model)
            job = self.client.submit(a.model, {self._input_name: array}, a.version)
            return top_k(self.client.result(job, timeout=a.job_timeout), a.top_k)
        job = self.client.submit(a.model, version=a.version, raw=path.read_bytes())
        return top_labels(self.client.result(job, timeout=a.job_timeout), a.top_k)


def write_line(out: IO[bytes], line: dict[str, Any]) -> None:
    """One complete line in one write, on disk before the next."""
    out.write(json.dumps(line).encode() + b"\n")
    out.flush()
    os.fsync(out.fileno())


def cmd_batch(args: argparse.Namespace) -> int:
    folder, output = Path(args.dir), Path(args.output)
    todo_all = inputs_of(folder)
    done = done_inputs(output)
    todo = [p for p in todo_all if p.name not in done]
    if done:
        print(f"trustserve: {len(todo_all) - len(todo)} inputs already scored", file=sys.stderr)
    try:
        client = open_client(args)
    except AttestationRefused as exc:
        return refused(args, exc)
    failed = 0
    with client, open_results(output) as out, ThreadPoolExecutor(args.max_in_flight) as pool:
        scorer = Scorer(client, args)
        bar = tqdm(total=len(todo), unit="input", file=sys.stderr, disable=args.quiet)
        pending: set[Future[dict[str, Any]]] = set()
        queue = iter(todo)
        for path in queue:
            pending.add(pool.submit(scorer.line, path))
            if len(pending) < args.max_in_flight:
                continue
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            failed += _write(out, finished, bar)
        failed += _write(out, pending, bar)
        bar.close()
    print(f"trustserve: {len(todo) - failed} scored, {failed} failed -> {output}", file=sys.stderr)
    return 1 if failed else 0


def _write(out: IO[bytes], finished: set[Future[dict[str, Any]]], bar: Any) -> int:
    failed = 0
    for fut in sorted(finished, key=lambda f: str(f.result()["input"])):
        line = fut.result()
        write_line(out, line)
        failed += "error" in line
        bar.update(1)
    return failed


def register_batch(sub: Any) -> None:
    p = sub.add_parser(
        "batch", help="score a folder of images or .npy files through async jobs (sealed)"
    )
    add_client_args(p, "dir", "folder of images (.jpg/.png), .npy arrays or .json bodies")
    p.add_argument("-o", "--output", required=True, help="JSON lines file (appended, resumable)")
    p.add_argument(
        "--max-in-flight",
        type=positive,
        default=8,
        help="jobs submitted and not yet answered at once (default %(default)s)",
    )
    p.add_argument(
        "--job-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for one job's answer (default %(default)g)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)
