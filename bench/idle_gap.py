"""What an idle pause costs a round trip on this host: the p50 of one 602 KB binary v2
request at a time to ``bare_server.py`` (a server that only reads the body), sent back to
back, and sent after the client has waited as long as resnet50's engine takes (the cores
idle meanwhile, as they do while a lone request's engine runs on a sleeping frontend).
Gaps alternate request by request, so a drift of the machine's speed hits both alike.

    cd bench && ../.venv/bin/python idle_gap.py [--requests 400] [--gap-ms 33] [--server uvicorn]

At 1 in flight a served request crosses the client, the frontend and a worker after such a
pause; docs/performance.md ("The floor under the p50 gap") reads the two figures.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time

from bare_server import running
from common import IMAGE, v2_binary_body


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--gap-ms", type=float, default=33.0)
    p.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    args = p.parse_args()
    body, hlen = v2_binary_body("input", IMAGE)
    headers = {
        "Inference-Header-Content-Length": str(hlen),
        "Content-Type": "application/octet-stream",
    }
    times: dict[float, list[float]] = {0.0: [], args.gap_ms: []}
    with running(args.server) as (port, ctx, _):
        conn = http.client.HTTPSConnection("localhost", port, context=ctx)
        for i in range(args.requests + 20):
            gap = args.gap_ms if i % 2 else 0.0
            time.sleep(gap / 1000)
            t0 = time.perf_counter()
            conn.request("POST", "/v2/models/m/infer", body, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"bare server answered {answer.status}")
            if i >= 20:  # warm-up
                times[gap].append((time.perf_counter() - t0) * 1000)
    for gap, got in times.items():
        got.sort()
        print(
            f"{args.server}, after {gap:.0f} ms idle: p50 {statistics.median(got):.2f} ms, "
            f"p90 {got[int(0.9 * len(got))]:.2f} ms ({len(got)} requests)"
        )


if __name__ == "__main__":
    main()
