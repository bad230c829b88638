"""A load client that costs little CPU: prebuilt HTTP/1.1 requests over keep-alive TLS.

Each of ``in_flight`` connections sends the same request back to back (a closed
loop) and reads the answer by Content-Length; nothing is parsed beyond that.
Reports throughput, latency percentiles and the client's own CPU time.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    @property
    def client_cpu_share(self) -> float:
        """Fraction of one core the client used."""
        return self.client_cpu_s / self.seconds if self.seconds else 0.0


def build_request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    request: bytes | Iterator[bytes],
    *,
    in_flight: int,
    duration_s: float,
    warmup_s: float,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str = "localhost",
) -> LoadResult:
    """``request``: one request sent again and again, or an iterator of single-use ones
    (sealed requests: a replay is refused); the run ends early if the iterator does."""
    latencies: list[float] = []
    errors = 0
    counting = False
    stop_at = 0.0
    fixed = request if isinstance(request, bytes) else None
    pool = None if isinstance(request, bytes) else request

    async def connection() -> None:
        nonlocal errors
        kw = {"ssl": ssl_context, "server_hostname": server_hostname} if ssl_context else {}
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22, **kw)  # type: ignore[arg-type]
        try:
            while not stop_at or time.perf_counter() < stop_at:
                data = fixed if fixed is not None else next(pool, None)  # type: ignore[arg-type]
                if data is None:
                    break
                t0 = time.perf_counter()
                writer.write(data)
                status = await _read_response(reader)
                if counting:
                    if status == 200:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(in_flight)]
    await asyncio.sleep(warmup_s)
    counting = True
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    stop_at = t0 + duration_s
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return LoadResult(len(latencies), errors, seconds, latencies, cpu)
