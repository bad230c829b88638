"""One request alone gets every core (issue 25): a served resnet50 INT8 stack with the wide
session off (``--lone-threads 0``, what every worker ran before) and on (the default), side
by side: both stacks run at once (an idle stack costs nothing) and the loads alternate, in
a shuffled order each round, so the machine's drift falls on both alike.

    cd bench && ../.venv/bin/python lone_threads.py --rounds 4 --seconds 6
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
from typing import Any

from common import demo_models, load, raw_engine, served, tls_context, v2_request
from stackstats import descendants


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid``'s descendants (the workers, the KMS; not the bench)."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    int8 = demo_models()["resnet50"]
    rng = random.Random(25)
    base = ("--threads", "1", "--workers", str(args.workers))
    got: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    with (
        served([int8], *base, "--lone-threads", "0", name="lone-old") as old,
        served([int8], *base, name="lone-new") as new,
    ):
        stacks = {"old": old, "new": new}
        print(
            {k: f"{rss_mib(s.process.pid):.0f} MiB RSS under the stack" for k, s in stacks.items()}
        )
        for k in range(args.rounds):
            raw2 = 1000 / raw_engine("onnxruntime", int8, 1, 2, args.seconds / 2)
            raw1 = 1000 / raw_engine("onnxruntime", int8, 1, 1, args.seconds / 2)
            got["old"].setdefault("raw batch-1 2 threads ms", []).append(raw2)
            got["old"].setdefault("raw batch-1 1 thread ms", []).append(raw1)
            points = [(m, n) for m in stacks for n in (1, 32)]
            rng.shuffle(points)
            line: dict[str, Any] = {"round": k, "raw2": round(raw2, 1), "raw1": round(raw1, 1)}
            for mode, n in points:
                s = stacks[mode]
                r = load(
                    "127.0.0.1", s.port, v2_request(s, "resnet50"), n, args.seconds, tls_context(s)
                )
                assert r.errors == 0, r.errors
                figure = r.percentile(50) if n == 1 else r.rps
                got[mode].setdefault(f"{n} in flight", []).append(figure)
                got[mode].setdefault(f"{n} in flight requests", []).append(r.requests)
                line[f"{mode} {n}"] = round(figure, 1)
            print(line, flush=True)
        print(
            {k: f"{rss_mib(s.process.pid):.0f} MiB RSS under the stack" for k, s in stacks.items()}
        )
    # each worker logs its counts as it stops; the 32-in-flight batches are all narrow
    runs = re.findall(r"ran (\d+) batches wide, (\d+) narrow", new.log.read_text())
    single = sum(got["new"]["1 in flight requests"])
    print(
        f"new stack: {sum(int(w) for w, _ in runs)} batches wide, "
        f"{sum(int(n) for _, n in runs)} narrow; {single:.0f} requests at 1 in flight"
    )
    o, w = got["old"], got["new"]
    med = statistics.median
    print(
        f"raw batch-1 p50-ish: 2 threads {med(o['raw batch-1 2 threads ms']):.1f} ms, "
        f"1 thread {med(o['raw batch-1 1 thread ms']):.1f} ms"
    )
    print(
        f"p50 at 1 in flight: old {med(o['1 in flight']):.1f} ms, "
        f"new {med(w['1 in flight']):.1f} ms"
    )
    ratios = [b / a for a, b in zip(o["32 in flight"], w["32 in flight"], strict=True)]
    print(
        f"32 in flight img/s: old {med(o['32 in flight']):.1f}, new {med(w['32 in flight']):.1f}, "
        f"new/old per round {[round(x, 2) for x in ratios]} median {med(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
