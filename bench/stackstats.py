"""Cold start and memory of a served stack: the two figures a user sees before throughput.

As a program, it compares stacks side by side (e.g. this checkout against another's venv):

    .venv/bin/python bench/stackstats.py ARCHIVE.tsm [--rounds 3] [--workers 2] \
        [--python /work/main/.venv/bin/python ...]

Each round launches ``trustserve serve --dev`` once per interpreter, in turn (interleaved,
so one noisy minute hits every contender), times launch → first answered v2 request
(HTTPS, 20 ms polls), prints when each log line appeared (where the start-up time goes),
then serves ``--load-s`` seconds at 32 in flight and sums the peak RSS (VmHWM) of every
process of the stack. The archive is encrypted for the development KMS before the clock
starts (``up`` does that once, at install time, not at each start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _hwm(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pids: list[int]) -> int:
    """The sum of each process's peak resident set (VmHWM): the stack's RAM high-water mark
    (an upper bound when the processes peaked at different times)."""
    return sum(_hwm(pid) for pid in pids)


def stack_peak_rss_bytes() -> int:
    """Every process this bench started (the stack, its workers, a TorchServe, a Redis)."""
    return peak_rss_bytes(descendants(os.getpid()))


def first_answer_s(started: float, ask: Callable[[], bool], timeout_s: float = 180) -> float:
    """Seconds from ``started`` (time.monotonic() when the server was launched) until
    ``ask()`` first returns True (an answered inference request)."""
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            if ask():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("no answer before the timeout")


# -- the side-by-side program ------------------------------------------------------------


def _prepare(root: Path, archive: Path) -> tuple[Path, Path]:
    """A home with a development KMS and a store holding the archive encrypted under it."""
    from tests.support import encrypt_for_dev_kms

    shutil.rmtree(root, ignore_errors=True)
    home, store = root / "home", root / "store"
    store.mkdir(parents=True)
    shutil.copy(archive, store / archive.name)
    encrypt_for_dev_kms(home, store / archive.name)
    return home, store


def _stamp(stream: object, started: float, lines: list[tuple[float, str]]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        lines.append((time.monotonic() - started, raw.decode(errors="replace").rstrip()))


def one_start(
    python: str, home: Path, store: Path, workers: int, load_s: float
) -> dict[str, object]:
    from common import answered, load, tls_context, v2_request

    from tests.support import RunningStack, free_port

    ports = [free_port() for _ in range(4)]
    argv = [python, "-m", "trustserve.cli", "serve", "--dev", "--home", str(home)]
    argv += ["--model-store", str(store), "--threads", "1", "--workers", str(workers)]
    argv += ["--port", str(ports[0]), "--management-port", str(ports[1])]
    argv += ["--metrics-port", str(ports[2]), "--kms-port", str(ports[3])]
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = threading.Thread(target=_stamp, args=(proc.stdout, started, lines), daemon=True)
    reader.start()
    stack = RunningStack(proc, home, store, *ports[:3], home / "unused.log", ports[3])
    try:
        first = first_answer_s(started, lambda: answered(stack, "resnet50"), 120)
        at_first = peak_rss_bytes([proc.pid, *descendants(proc.pid)])
        if load_s > 0:
            load(
                "127.0.0.1",
                stack.port,
                v2_request(stack, "resnet50"),
                32,
                load_s,
                tls_context(stack),
            )
        pids = [proc.pid, *descendants(proc.pid)]
        per = sorted((_hwm(p) for p in pids), reverse=True)
        return {
            "first_answer_s": first,
            "rss_at_first_answer": at_first,
            "peak_rss_bytes": sum(per),
            "per_process": per,
            "log": [(t, s) for t, s in lines if t <= first + 0.5],
        }
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prepare_cold_start(root: Path, archive: Path, workers: int) -> Callable[[], float]:
    """For ``run.py``: a home and store made once (and one untimed start, which makes the
    TLS files); each call of the result is one timed launch → first answer, in seconds."""
    home, store = _prepare(root, archive)
    one_start(sys.executable, home, store, workers, 0)

    def timed() -> float:
        return float(one_start(sys.executable, home, store, workers, 0)["first_answer_s"])  # type: ignore[arg-type]

    return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("archive", type=Path)
    ap.add_argument("--python", action="append", help="interpreters to compare (default: ours)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--load-s", type=float, default=3.0)
    ap.add_argument("--work", type=Path, default=Path("results/run/coldstart"))
    ap.add_argument("--quiet", action="store_true", help="no per-start log timeline")
    args = ap.parse_args()
    pythons = args.python or [sys.executable]
    homes = {p: _prepare(args.work / str(i), args.archive) for i, p in enumerate(pythons)}
    for p in pythons:  # warm the page cache and create TLS files: not part of the figure
        one_start(p, *homes[p], args.workers, 0)
    got: dict[str, list[dict[str, object]]] = {p: [] for p in pythons}
    for r in range(args.rounds):
        for p in pythons:
            res = one_start(p, *homes[p], args.workers, args.load_s)
            got[p].append(res)
            per = ", ".join(f"{b / 2**20:.0f}" for b in res["per_process"])  # type: ignore[attr-defined]
            print(
                f"round {r + 1} {p}: first answer {res['first_answer_s']:.2f} s, "
                f"peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB ({per} MiB)",
                flush=True,
            )  # type: ignore[operator]
            if not args.quiet:
                for t, line in res["log"]:  # type: ignore[attr-defined]
                    print(f"   {t:6.2f} {line[:240]}")
    base = statistics.median(float(x["first_answer_s"]) for x in got[pythons[0]])  # type: ignore[arg-type]
    print(f"\nmedian of {args.rounds} interleaved rounds, {args.workers} workers x 1 thread")
    print("| interpreter | first answer s | ÷ first | peak RSS GiB |")
    print("|---|---|---|---|")
    for p, rs in got.items():
        first = statistics.median(float(x["first_answer_s"]) for x in rs)  # type: ignore[arg-type]
        rss = statistics.median(int(x["peak_rss_bytes"]) for x in rs) / 2**30  # type: ignore[call-overload]
        print(f"| {p} | {first:.2f} | {first / base:.2f} | {rss:.2f} |")


if __name__ == "__main__":
    HERE = Path(__file__).resolve().parent
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    main()
