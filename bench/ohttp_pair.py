"""Sealed against OHTTP on one served INT8 stack: the issue-24 pair of `make bench`, alone.

    .venv/bin/python bench/ohttp_pair.py [--seconds 10] [--rounds 3] [--in-flight 8]

The two run in interleaved rounds on the same stack (one noisy minute hits both), each
with prebuilt single-use requests (a replay would be refused); prints each round's
images per second and the median ratio OHTTP / sealed (target: ≥ 0.95).
"""

from __future__ import annotations

import argparse
import os
import statistics

from common import demo_models, load, ohttp_requests, sealed_requests, served, tls_context


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--rate", type=float, default=40.0, help="expected img/s: sizes the pools")
    args = p.parse_args()
    threads = os.cpu_count() or 1
    int8 = demo_models()["resnet50"]
    ratios = []
    with served([int8], "--threads", "1", "--workers", str(threads), name="ohttp-pair") as s:
        ctx = tls_context(s)
        for k in range(1, args.rounds + 1):
            figures = {}
            for name, make in (("sealed", sealed_requests), ("ohttp", ohttp_requests)):
                count = int(args.rate * (args.seconds + 4) * 1.5) + 2 * args.in_flight
                pool = make(s, "resnet50", count)
                r = load("127.0.0.1", s.port, iter(pool), args.in_flight, args.seconds, ctx)
                figures[name] = r.rps
                print(f"round {k}: {name}: {figures[name]:.1f} img/s, {r.errors} errors")
            ratios.append(figures["ohttp"] / figures["sealed"])
            print(f"round {k}: OHTTP / sealed = {ratios[-1]:.3f}")
    print(f"median OHTTP / sealed over {args.rounds} rounds: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
