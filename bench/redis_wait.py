"""What ``WAIT`` costs: an async job's record put with and without waiting for the replica.

A primary, a replica and three Sentinels as ``trustserve redis config --replica --sentinel``
writes them (TLS, ACL, ``appendfsync always`` on both servers), on this machine; the
frontend's own client (``rediss+sentinel://``) puts 1 KB records (the size of a sealed
async job record with a small answer) one at a time, in alternating rounds of
``replicas=0`` (``SET``) and ``replicas=1`` (``SET`` + ``WAIT 1``), so that drift of
this shared machine's speed hits both alike.

    cd bench && ../.venv/bin/python redis_wait.py [--rounds 5] [--puts 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests.*

from tests.broker.redis_ha import HaRedis
from trustserve.broker.redis_config import open_client, parse_redis_url
from trustserve.broker.redis_jobs import RedisJobStore


async def measure(url: str, rounds: int, puts: int) -> dict[int, list[float]]:
    client = open_client(parse_redis_url(url))
    record = os.urandom(1024)
    times: dict[int, list[float]] = {0: [], 1: []}
    try:
        for _ in range(rounds):
            for replicas in (0, 1):
                store = RedisJobStore(client, "trustserve", replicas)
                for i in range(puts):
                    start = time.perf_counter()
                    await store.put(f"bench-{i}", record, 60)
                    times[replicas].append(time.perf_counter() - start)
    finally:
        await client.aclose()
    return times


def wait_cost(rounds: int = 5, puts: int = 200) -> dict[str, float]:
    """p50 and p99 (ms) of a put without (``set_*``) and with ``WAIT 1`` (``wait_*``)."""
    with tempfile.TemporaryDirectory() as tmp, HaRedis.running(Path(tmp) / "redis") as ha:
        times = asyncio.run(measure(ha.urls["frontends"], rounds, puts))
    out: dict[str, float] = {"puts": len(times[0])}
    for replicas, name in ((0, "set"), (1, "wait")):
        out[f"{name}_p50_ms"] = statistics.median(times[replicas]) * 1000
        out[f"{name}_p99_ms"] = statistics.quantiles(times[replicas], n=100)[98] * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--puts", type=int, default=200)
    args = parser.parse_args()
    got = wait_cost(args.rounds, args.puts)
    print("| async job record put | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| SET (no replica wait) | {got['set_p50_ms']:.2f} | {got['set_p99_ms']:.2f} |")
    print(f"| SET + WAIT 1 | {got['wait_p50_ms']:.2f} | {got['wait_p99_ms']:.2f} |")
    extra, ratio = got["wait_p50_ms"] - got["set_p50_ms"], got["wait_p50_ms"] / got["set_p50_ms"]
    print(f"\nWAIT adds {extra:.2f} ms at p50 ({ratio:.2f}x), {got['puts']:.0f} puts each")


if __name__ == "__main__":
    main()
