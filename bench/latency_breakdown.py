"""Where a request's time goes at 1 in flight: the client's latency next to the stack's own
histograms (frontend request, broker queue wait, worker preprocessing, engine time), for the
default 2 workers x 1 thread and for 1 worker x 2 threads (docs/performance.md).

    cd bench && ../.venv/bin/python latency_breakdown.py
"""

from __future__ import annotations

import httpx
from common import demo_models, load, served, tls_context, v2_request

from tests.support import RunningStack


def scrape(s: RunningStack) -> dict[str, tuple[float, float]]:
    """Sum and count of each of the stack's latency histograms for resnet50."""
    text = httpx.get(f"https://127.0.0.1:{s.metrics_port}/metrics", verify=str(s.ca)).text
    out = {}
    for name in ("request", "queue", "preprocess", "inference"):
        total = count = 0.0
        for line in text.splitlines():
            if 'model="resnet50"' not in line:
                continue
            if line.startswith(f"trustserve_{name}_seconds_sum"):
                total += float(line.split()[-1])
            if line.startswith(f"trustserve_{name}_seconds_count"):
                count += float(line.split()[-1])
        out[name] = (total, count)
    return out


def main() -> None:
    models = demo_models()
    for w, t in ((2, 1), (1, 2)):
        flags = ("--threads", str(t), "--workers", str(w))
        with served([models["resnet50"]], *flags, name=f"breakdown{w}x{t}") as s:
            load("127.0.0.1", s.port, v2_request(s, "resnet50"), 1, 3, tls_context(s))  # warm
            a = scrape(s)
            r = load("127.0.0.1", s.port, v2_request(s, "resnet50"), 1, 10, tls_context(s))
            b = scrape(s)
            ms = {k: (b[k][0] - a[k][0]) / max(1, b[k][1] - a[k][1]) * 1000 for k in a}
            print(
                f"{w} workers x {t} threads, 1 in flight: client p50 {r.percentile(50):.1f} ms;"
                f" frontend request {ms['request']:.1f} ms = broker queue {ms['queue']:.1f}"
                f" + worker preprocess {ms['preprocess']:.1f} + engine {ms['inference']:.1f}"
                " + the rest (hops, decrypt, encode)",
                flush=True,
            )


if __name__ == "__main__":
    main()
