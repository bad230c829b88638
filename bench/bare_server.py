"""The floor under the frontend's CPU per request: an HTTPS server that only reads each
request's body (joining its pieces, as the frontend does) and answers 4 KB, the size of the
cheap model's binary v2 answer. ``frontend_cost.py`` loads it with the same requests, the
same client and the same number in flight as the real frontend, in the same round, so the
difference between the two is what trustserve's own layers cost.

    python bare_server.py --port P --tls DIR [--server uvicorn|granian]

``running(server)`` starts it in a child process for a bench and gives its port, the client
TLS context and its pid.

``uvicorn``: the stack's own server (``trustserve.stack.http.http_server``: httptools,
uvloop, the stack's TLS options). ``granian``: a server whose TLS, HTTP parsing and body
reads are in Rust (granian's embedded server on the same uvloop), to see how much of the
floor a change of server would take away.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from trustserve.tls import ensure_local_ca  # noqa: E402

ANSWER = b"\0" * 4096
HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"4096")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    pieces = []
    while True:
        message = await receive()
        pieces.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(pieces)
    status = 200 if body else 400
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


@contextmanager
def running(server: str) -> Iterator[tuple[int, ssl.SSLContext, int]]:
    """This server in a child process, on a free port with a new local CA: (port, client
    context, pid) once it takes a TLS connection; stopped on leaving."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tls:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port), "--tls", tls, "--server", server]
        )
        try:
            yield port, _ready(port, Path(tls) / "ca.pem", proc), proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _ready(port: int, ca: Path, proc: subprocess.Popen[bytes]) -> ssl.SSLContext:
    """The client context once the server takes a TLS connection (its CA is written first)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                ctx.wrap_socket(sock, server_hostname="localhost").close()
            return ctx
        except (OSError, ssl.SSLError):
            time.sleep(0.1)
    raise RuntimeError(f"bare_server.py ({port}) did not start")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", type=Path, required=True, help="folder of the local CA (made if new)")
    p.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    args = p.parse_args()
    tls = ensure_local_ca(args.tls)
    import uvloop

    if args.server == "uvicorn":
        from trustserve.stack.http import http_server

        uvloop.run(http_server(app, "127.0.0.1", args.port, tls).serve())
    else:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        server = Server(
            app,
            address="127.0.0.1",
            port=args.port,
            interface=Interfaces.ASGINL,
            ssl_cert=tls.cert,
            ssl_key=tls.key,
            log_enabled=False,
        )
        uvloop.run(server.serve())


if __name__ == "__main__":
    main()
