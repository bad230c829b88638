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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--puts", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, HaRedis.running(Path(tmp) / "redis") as ha:
        times = asyncio.run(measure(ha.urls["frontends"], args.rounds, args.puts))
    p50 = {r: statistics.median(t) * 1000 for r, t in times.items()}
    p99 = {r: statistics.quantiles(t, n=100)[98] * 1000 for r, t in times.items()}
    print("| async job record put | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| SET (no replica wait) | {p50[0]:.2f} | {p99[0]:.2f} |")
    print(f"| SET + WAIT 1 | {p50[1]:.2f} | {p99[1]:.2f} |")
    extra, ratio = p50[1] - p50[0], p50[1] / p50[0]
    print(f"\nWAIT adds {extra:.2f} ms at p50 ({ratio:.2f}x), {len(times[0])} puts each")


if __name__ == "__main__":
    main()
