"""Sealed against OHTTP on one served INT8 stack: the issue-24 pair of `make bench`, alone.

    .venv/bin/python bench/ohttp_pair.py [--seconds 10] [--rounds 3] [--in-flight 8]

The two run in interleaved rounds on the same stack (one noisy minute hits both), each
with prebuilt single-use requests (a replay would be refused); prints each round's
images per second and the median ratio OHTTP / sealed (target: ≥ 0.95), and what each
costs a worker per request (``worker_cost``, also in `make bench`'s report).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from common import (
    IMAGE,
    demo_models,
    load,
    ohttp_requests,
    sealed_requests,
    served,
    tls_context,
    v2_binary_body,
)


def worker_cost(samples: int = 150) -> dict[str, float]:
    """What a worker spends on one resnet50 request besides inference, p50 ms: open it and
    seal a 4 KB answer, in the sealed format and as OHTTP (decapsulate, Binary HTTP)."""
    from trustserve.client.ohttp import encapsulate, inner_request, v2_headers
    from trustserve.crypto import bhttp, hpke, ohttp
    from trustserve.crypto.sealing import Route, open_request, seal_request, seal_response

    private, public = hpke.generate_keypair()
    route, config = Route("resnet50", "int8", "kid"), ohttp.KeyConfig(1, public)
    body, hlen = v2_binary_body("input", IMAGE)
    answer = np.zeros(4096, np.uint8).tobytes()
    path = "/v2/models/resnet50/versions/int8/infer"
    sealed = [seal_request(public, route, body, hlen)[0] for _ in range(samples)]
    encapsulated = [
        encapsulate(config, inner_request(path, body, v2_headers(hlen)))[0] for _ in range(samples)
    ]

    def open_sealed(data: bytes) -> None:
        opened = open_request(private, route, data)
        seal_response(opened.reply, route, answer, 100)

    def open_ohttp(data: bytes) -> None:
        plain, context = ohttp.decapsulate_request(private, 1, data)
        bhttp.decode_request(plain)
        headers = (
            ("content-type", "application/octet-stream"),
            ("inference-header-content-length", "100"),
        )
        context.seal_response(bhttp.encode_response(bhttp.Response(200, headers, answer)))

    out = {"bytes": float(len(body))}
    for name, run, pool in (("sealed", open_sealed, sealed), ("ohttp", open_ohttp, encapsulated)):
        times = []
        for data in pool:
            t0 = time.perf_counter()
            run(data)
            times.append((time.perf_counter() - t0) * 1000)
        out[f"{name}_p50_ms"] = float(np.percentile(times, 50))
    return out


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
    print(f"worker cost per request besides inference: {worker_cost()}")


if __name__ == "__main__":
    main()
