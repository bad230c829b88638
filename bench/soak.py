"""Soak: a bounded mix of requests for a bounded time against a stack on localhost.

    python -m bench.soak [--seconds 300] [--concurrency 8] [--json out.json]

Starts its own stack (``trustserve serve --dev``: HTTPS, embedded broker and KMS,
one worker, the tiny model, a 1 MiB body limit) unless ``--url`` names a running
one, then sends, from ``--concurrency`` client threads, a weighted mix of: valid
JSON and binary v2 requests, sealed requests (verified bundle first), replays of
a sealed request, invalid requests, oversized bodies, bodies cut off mid-way
(the connection closed), and slow clients (the body in pieces, with pauses).

It reports requests and answers by kind and status, and RSS and open file
descriptors of every stack process at the start (after a warm-up) and the end.
It fails (exit 1) if any answer was a 5xx, a valid request was not answered
200, or a process grew beyond the bounds: ``--max-rss-growth-mb`` (default 64)
and ``--max-fd-growth`` (default 16) per process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.sdk import prepare
from trustserve.crypto.sealing import CONTENT_TYPE, KEY_ID_HEADER

INFER = "/v2/models/tiny/infer"
VALID = {"json", "binary", "sealed", "slow"}  # kinds that must be answered 200
MIX = {
    "json": 30,
    "binary": 15,
    "sealed": 10,
    "replayed": 5,
    "invalid": 15,
    "oversized": 5,
    "cancelled": 10,
    "slow": 5,
}


def _one(**fields: Any) -> bytes:
    """A one-row JSON request for the tiny model, ``fields`` changed."""
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4], **fields}
    return json.dumps({"inputs": [tensor]}).encode()


@dataclass
class Tally:
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int, detail: str = "") -> None:
        with self.lock:
            self.answers[(kind, status)] += 1
            if status >= 500 or status == -2 or (kind in VALID and status != 200):
                self.failures.append(f"{kind}: {status} {detail[:200]}")


def processes(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def usage(pid: int) -> dict[str, Any] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    worker = any(a == b"worker" or a.endswith(b".worker") for a in argv)
    role = "worker" if worker else Path(argv[0].decode(errors="replace")).name
    return {"pid": pid, "rss_mb": round(rss_kb / 1024, 1), "fds": fds, "cmd": role}


def snapshot(root: int) -> dict[int, dict[str, Any]]:
    found = {p: u for p in processes(root) if (u := usage(p)) is not None}
    if root in found:
        found[root]["cmd"] = "serve (frontend, broker, KMS)"
    return found


class Mix:
    """One client thread's requests; each method sends one request of its kind."""

    def __init__(self, url: str, ca: Path, home: Path, tally: Tally) -> None:
        self.url, self.ca, self.tally = url, ca, tally
        self.http = httpx.Client(base_url=url, verify=str(ca), timeout=60)
        self.sealed_client = TrustserveClient(url, policy=ClientPolicy.development(home), ca=ca)
        self.rng = np.random.default_rng()
        self.replay: tuple[str, bytes, dict[str, str]] | None = None
        host, port = url.removeprefix("https://").split(":")
        self.address = (host, int(port))
        self.tls = ssl.create_default_context(cafile=str(ca))

    def close(self) -> None:
        self.http.close()
        self.sealed_client.close()

    def _x(self) -> np.ndarray:
        return self.rng.uniform(-10, 10, (int(self.rng.integers(1, 9)), 4)).astype(np.float32)

    def json(self) -> None:
        x = self._x()
        body = {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ]
        }
        r = self.http.post(INFER, json=body)
        ok = r.status_code == 200 and np.allclose(
            np.array(next(o for o in r.json()["outputs"] if o["name"] == "y")["data"]),
            (2 * x + 1).ravel(),
            rtol=1e-5,
        )
        self.tally.add("json", r.status_code if ok or r.status_code != 200 else 599, r.text)

    def binary(self) -> None:
        p = prepare("tiny", None, {"x": self._x()}, None, None)
        r = self.http.post(p.path, content=p.body, headers=p.headers)
        self.tally.add("binary", r.status_code, r.text)

    def sealed(self) -> None:
        target = self.sealed_client.verify()
        x = self._x()
        p = prepare("tiny", None, {"x": x}, None, target)
        headers = {"Content-Type": CONTENT_TYPE, KEY_ID_HEADER: target.key_id}
        r = self.http.post(p.path, content=p.body, headers=headers)
        self.tally.add("sealed", r.status_code, r.text)
        if r.status_code == 200:
            self.replay = (p.path, p.body, headers)

    def replayed(self) -> None:
        if self.replay is None:
            return self.sealed()
        path, body, headers = self.replay
        r = self.http.post(path, content=body, headers=headers)
        self.tally.add("replayed", r.status_code, r.text)

    def invalid(self) -> None:
        bodies = [
            b'{"inputs": [',
            _one(shape=[1, 5], data=[1, 2, 3, 4, 5]),
            _one(shape=[0, 2**40], data=[]),
            _one(name="z"),
            _one(datatype="INT8"),
        ]
        r = self.http.post(
            INFER, content=random.choice(bodies), headers={"Content-Type": "application/json"}
        )
        self.tally.add("invalid", r.status_code, r.text)

    def oversized(self) -> None:
        r = self.http.post(INFER, content=b"[" * (2 * 1024 * 1024))
        self.tally.add("oversized", r.status_code, r.text)

    def _raw(self, head: bytes, pieces: list[bytes], pause: float) -> int | None:
        with (
            socket.create_connection(self.address, timeout=30) as raw,
            self.tls.wrap_socket(raw, server_hostname=self.address[0]) as s,
        ):
            s.sendall(head)
            for piece in pieces:
                time.sleep(pause)
                s.sendall(piece)
            if not pieces or pause < 0:
                return None
            answer = s.recv(65536)
            return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else -1

    def _head(self, length: int, extra: str = "") -> bytes:
        return (
            f"POST {INFER} HTTP/1.1\r\nHost: {self.address[0]}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {length}\r\n{extra}\r\n"
        ).encode()

    def cancelled(self) -> None:
        """Headers and half the body, then the connection closes: nothing to answer."""
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        ).encode()
        self._raw(self._head(len(body)) + body[: len(body) // 2], [], 0)
        self.tally.add("cancelled", 0)

    def slow(self) -> None:
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        ).encode()
        third = len(body) // 3
        pieces = [body[:third], body[third : 2 * third], body[2 * third :]]
        status = self._raw(self._head(len(body), "Connection: close\r\n"), pieces, 0.3)
        self.tally.add("slow", status or -1)


def run(url: str, ca: Path, home: Path, seconds: float, concurrency: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    kinds, weights = list(MIX), list(MIX.values())

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        mix = Mix(url, ca, home, tally)
        try:
            while time.monotonic() < deadline:
                kind = rnd.choices(kinds, weights)[0]
                try:
                    getattr(mix, kind)()
                except (httpx.HTTPError, OSError) as exc:
                    tally.add(kind, -1 if kind != "cancelled" else 0, repr(exc))
                except Exception as exc:  # a failure of this client: counted, never silent
                    tally.add(kind, -2, repr(exc))
        finally:
            mix.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


def grown(
    start: dict[int, dict[str, Any]], end: dict[int, dict[str, Any]], rss_mb: float, fds: int
) -> list[str]:
    problems = []
    for pid, before in start.items():
        after = end.get(pid)
        if after is None:
            problems.append(f"process {pid} ({before['cmd']}) is gone")
            continue
        if after["rss_mb"] - before["rss_mb"] > rss_mb:
            problems.append(f"{pid} RSS {before['rss_mb']} -> {after['rss_mb']} MiB")
        if after["fds"] - before["fds"] > fds:
            problems.append(f"{pid} fds {before['fds']} -> {after['fds']}")
    return problems


def soak(args: argparse.Namespace, stack: Any) -> dict[str, Any]:
    """``stack``: a running ``tests.support.RunningStack``."""
    run(stack.url, stack.ca, stack.home, min(5.0, args.seconds), args.concurrency)  # warm-up
    start = snapshot(stack.process.pid)
    began = time.monotonic()
    tally = run(stack.url, stack.ca, stack.home, args.seconds, args.concurrency)
    elapsed = time.monotonic() - began
    time.sleep(1.0)  # let cut-off connections close
    end = snapshot(stack.process.pid)
    growth = grown(start, end, args.max_rss_growth_mb, args.max_fd_growth)
    with httpx.Client(base_url=stack.url, verify=str(stack.ca)) as c:
        final = c.post(
            INFER,
            json={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
            },
        )
    by_status = Counter[int]()
    for (_, status), n in tally.answers.items():
        by_status[status] += n
    return {
        "seconds": round(elapsed, 1),
        "concurrency": args.concurrency,
        "requests": sum(tally.answers.values()),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "by_kind": {f"{k} {s}": n for (k, s), n in sorted(tally.answers.items())},
        "start": list(start.values()),
        "end": list(end.values()),
        "failures": tally.failures[:20],
        "growth_problems": growth,
        "final_valid_request": final.status_code,
        "bounds": {"rss_growth_mb": args.max_rss_growth_mb, "fd_growth": args.max_fd_growth},
        "ok": not tally.failures and not growth and final.status_code == 200,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"soak: {report['requests']} requests in {report['seconds']} s, "
        f"{report['concurrency']} clients; statuses {report['by_status']}"
    )
    for kind, n in report["by_kind"].items():
        print(f"  {kind:16} {n}")
    print("      pid process                         RSS MiB start -> end     fds start -> end")
    end = {p["pid"]: p for p in report["end"]}
    for p in report["start"]:
        e = end.get(p["pid"], {"rss_mb": "-", "fds": "-"})
        rss, fds = f"{p['rss_mb']:>8} -> {e['rss_mb']:<8}", f"{p['fds']:>5} -> {e['fds']}"
        print(f"  {p['pid']:>7} {p['cmd'][:30]:30} {rss}    {fds}")
    for line in report["failures"] + report["growth_problems"]:
        print(f"  FAIL {line}")
    print("soak: OK" if report["ok"] else "soak: FAILED")


def markdown(report: dict[str, Any]) -> str:
    """The ``## Soak`` section of docs/benchmarks.md for ``report``."""
    b = report["bounds"]
    lines = [
        "## Soak",
        "",
        f"`make soak` (`bench/soak.py`): {report['seconds']:.0f} s, {report['concurrency']} client "
        f"threads against a `--dev` stack on localhost (tiny model, 1 MiB body limit); run "
        f"{report.get('when', '')}. {report['requests']} requests; "
        f"answers by status: {', '.join(f'{k}: {v}' for k, v in report['by_status'].items())} "
        "(0: cut off by the client, no answer expected).",
        "",
        "| kind | status | count |",
        "|---|---|---|",
        *(f"| {k.split()[0]} | {k.split()[1]} | {n} |" for k, n in report["by_kind"].items()),
        "",
        "| process | RSS MiB start | RSS MiB end | fds start | fds end |",
        "|---|---|---|---|---|",
    ]
    end = {p["pid"]: p for p in report["end"]}
    for p in report["start"]:
        e = end.get(p["pid"], {"rss_mb": "gone", "fds": "gone"})
        lines.append(f"| {p['cmd']} | {p['rss_mb']} | {e['rss_mb']} | {p['fds']} | {e['fds']} |")
    verdict = (
        "passed"
        if report["ok"]
        else "FAILED: " + "; ".join(report["failures"][:3] + report["growth_problems"][:3])
    )
    lines += [
        "",
        f"Bounds: RSS growth ≤ {b['rss_growth_mb']} MiB and fd growth ≤ {b['fd_growth']} per "
        f"process (after a 5 s warm-up); no 5xx; every valid request 200. Result: {verdict}.",
    ]
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, report: dict[str, Any]) -> None:
    """Replace (or add) the ``## Soak`` section of ``doc``."""
    text = doc.read_text() if doc.exists() else ""
    head, _, rest = text.partition("## Soak\n")
    tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    doc.write_text(head.rstrip("\n") + "\n\n" + markdown(report) + ("\n" + tail if tail else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-rss-growth-mb", type=float, default=64)
    parser.add_argument("--max-fd-growth", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--doc", type=Path, help="write the figures into this markdown file")
    args = parser.parse_args(argv)
    from tests.support import start_stack, write_tiny  # run from the repository root

    with tempfile.TemporaryDirectory(prefix="trustserve-soak-") as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        write_tiny(store)
        stack = start_stack(Path(tmp) / "home", store, "--max-body-mb", "1")
        try:
            report = soak(args, stack)
        finally:
            stack.stop()
    report["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.doc:
        write_doc(args.doc, report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
