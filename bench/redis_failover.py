"""How long a Redis primary's death stops writes, and what ``WAIT`` costs (issue 22).

Each round starts a primary, a replica and three Sentinels as ``trustserve redis config
--replica --sentinel`` writes them (TLS, ACL, its default ``--down-after-ms``), puts a job
record through the frontends' own ``rediss+sentinel://`` client, kills the primary with
SIGKILL and puts again every 20 ms until a put succeeds: the time from the kill to that
put is what clients see (the Sentinels' down-after time, their election, the promotion and
the client asking them again). The median over the rounds goes into ``make bench``'s
report with ``redis_wait.py``'s cost of ``WAIT``.

    cd bench && ../.venv/bin/python redis_failover.py [--rounds 3]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests.*

DOWN_AFTER_MS = 5000  # `trustserve redis config`'s default --down-after-ms
GIVE_UP_S = 120.0


async def _first_write_after_kill(ha: Any) -> float:
    from trustserve.broker.redis_config import open_client, parse_redis_url
    from trustserve.broker.redis_jobs import RedisJobStore
    from trustserve.errors import Unavailable

    client = open_client(parse_redis_url(ha.urls["frontends"]))
    store = RedisJobStore(client, "trustserve", 0)
    record = os.urandom(1024)
    try:
        await store.put("bench-before", record, 60)  # the client holds the primary now
        killed = time.monotonic()
        ha.kill("primary")
        while True:
            try:
                await store.put("bench-after", record, 60)
                return time.monotonic() - killed
            except Unavailable:
                if time.monotonic() - killed > GIVE_UP_S:
                    raise
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


def failover_s(down_after_ms: int = DOWN_AFTER_MS) -> float:
    """One round: seconds from the primary's SIGKILL to the first put that succeeds."""
    from tests.broker.redis_ha import HaRedis

    with (
        tempfile.TemporaryDirectory() as tmp,
        HaRedis.running(Path(tmp) / "redis", down_after_ms) as ha,
    ):
        took = asyncio.run(_first_write_after_kill(ha))
        if ha.primary_port() != ha.ports["replica"]:
            raise AssertionError("a put succeeded, but the Sentinels did not promote the replica")
    return took


def measure(rounds: int = 3, wait_rounds: int = 5, puts: int = 200) -> dict[str, Any]:
    """``make bench``'s step: the failover rounds and the cost of ``WAIT``."""
    from redis_wait import wait_cost

    return {
        "down_after_ms": DOWN_AFTER_MS,
        "failover_s": [failover_s() for _ in range(rounds)],
        "wait": wait_cost(wait_rounds, puts),
    }


def checks(ha: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's rows (figure, this run)."""
    rows = []
    times = ha.get("failover_s") or []
    if times:
        spread = ", ".join(f"{t:.1f}" for t in times)
        rows.append(
            (
                "Redis primary SIGKILL → first job put through the Sentinel URL, "
                f"`--down-after-ms {ha['down_after_ms']}` (issue 22)",
                f"{statistics.median(times):.1f} s (median of {len(times)}: {spread})",
            )
        )
    w = ha.get("wait")
    if w:
        extra = w["wait_p50_ms"] - w["set_p50_ms"]
        p99 = f"p99 {w['wait_p99_ms']:.1f} vs {w['set_p99_ms']:.1f} ms"
        rows.append(
            (
                "async job record put, SET + WAIT 1 vs SET, p50 (issue 22: the cost of WAIT)",
                f"{w['wait_p50_ms']:.2f} ms vs {w['set_p50_ms']:.2f} ms (+{extra:.2f} ms; "
                f"{p99}; {w['puts']:.0f} puts each)",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for figure, value in checks(measure(args.rounds)):
        print(f"{figure}: {value}")


if __name__ == "__main__":
    main()
