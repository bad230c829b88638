"""What checking the KMS's transparency log costs a sealed request once the bundle is cached
(issue 23: the sealed request path's p50 unchanged within noise).

    cd bench && ../.venv/bin/python transparency_cost.py [--rounds 3] [--requests 200]

One served stack (the digits model, one worker); two SDK clients side by side, one whose
policy has a ``transparency:`` section (``quorum: 0``: the KMS signature, the stored
checkpoint, consistency and inclusion are all checked) and one without. Each verifies the
bundle once (outside the clock) and then sends sealed requests one at a time, in alternating
rounds so that drift of this shared machine's speed hits both alike; the p50 of each, and
their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import demo_models, served

from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.transparency.witness_policy import WitnessPolicy


def measure(rounds: int = 3, requests: int = 200) -> dict[str, Any]:
    row = np.random.default_rng(23).standard_normal((1, 64)).astype(np.float32)
    digits = demo_models()["digits"]
    times: dict[str, list[float]] = {"plain": [], "logged": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        served([digits], "--workers", "1", name="transparency") as stack,
    ):
        plain = ClientPolicy.development(stack.home)
        logged = ClientPolicy.development(
            stack.home, transparency=WitnessPolicy((), 0), checkpoints=Path(tmp)
        )
        clients = {
            "plain": TrustserveClient(stack.url, policy=plain, ca=stack.ca),
            "logged": TrustserveClient(stack.url, policy=logged, ca=stack.ca),
        }
        try:
            assert clients["logged"].verify().checkpoint is not None  # the log is checked
            for client in clients.values():
                client.infer("digits", {"input": row})  # warm: the bundle is now cached
            for _ in range(rounds):
                for name, client in clients.items():
                    for _ in range(requests):
                        start = time.perf_counter()
                        client.infer("digits", {"input": row})
                        times[name].append((time.perf_counter() - start) * 1000)
        finally:
            for client in clients.values():
                client.close()
    p50 = {name: statistics.median(t) for name, t in times.items()}
    return {
        "plain_p50_ms": p50["plain"],
        "logged_p50_ms": p50["logged"],
        "ratio": p50["logged"] / p50["plain"],
        "rounds": rounds,
        "requests": requests,
    }


def checks(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's row (``make bench``'s Targets table)."""
    return [
        (
            "sealed request p50, bundle cached: KMS log checked / not (issue 23: unchanged "
            "within noise)",
            f"{result['logged_p50_ms']:.2f} ms / {result['plain_p50_ms']:.2f} ms "
            f"(ratio {result['ratio']:.3f}; {result['rounds']} rounds of "
            f"{result['requests']} each)",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    for name, value in checks(measure(args.rounds, args.requests)):
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
