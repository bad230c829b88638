"""A stand-in for the KMS's public log routes, on a real loopback HTTP server.

The KMS serves these routes on branch tlog-kms (being built in parallel): until both are
merged, the frontend proxy and ``trustserve log`` are tested against this server, which
serves the contract's routes (``trustserve.transparency.routes``) from a ``TestLog`` built
in the test. ``edited`` replaces what is served for some entries while proofs and
checkpoints stay those of the log as it was signed: an operator who edited the stored
entries after the fact.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.transparency.tlog_support import TestLog
from trustserve.transparency.note import Signer


@dataclass
class LogView:
    """What the stand-in serves: the log, its witnesses, entries edited after signing."""

    log: TestLog
    witnesses: tuple[Signer, ...] = ()
    edited: dict[int, dict[str, Any]] = field(default_factory=dict)
    size: int | None = None  # serve only a prefix (None: all)
    requests: list[str] = field(default_factory=list)

    def served_size(self) -> int:
        return self.log.size if self.size is None else self.size


def _handler(view: LogView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: Any, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _bad(self, message: str) -> None:
            self._json({"error": message, "code": "bad_request"}, 400)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            view.requests.append(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            n = view.served_size()
            try:
                args = {k: int(v) for k, v in q.items()}
            except ValueError:
                return self._bad("a query parameter is not a number")
            if url.path == "/v1/attestation":  # only what `trustserve log` reads of it
                return self._json({"identity_public_key": _b64(view.log.public)})
            if url.path == "/v1/log/checkpoint":
                text = view.log.checkpoint(n, view.witnesses).encode()
                return self._send(200, text, "text/plain; charset=utf-8")
            if url.path == "/v1/log/entries":
                start, end = args.get("start", -1), args.get("end", -1)
                if not 0 <= start < end <= n or end - start > 1000:
                    return self._bad(f"start {start} / end {end} outside 0..{n} (at most 1000)")
                entries = [
                    {"index": i, "entry": view.edited.get(i, view.log.entries[i])}
                    for i in range(start, end)
                ]
                return self._json({"size": n, "entries": entries})
            if url.path == "/v1/log/proof/consistency":
                old, new = args.get("old", -1), args.get("new", -1)
                if not 0 < old <= new <= n:
                    return self._bad(f"old {old} / new {new} outside 1..{n}")
                proof = [_b64(p) for p in view.log.consistency(old, new)]
                return self._json({"old": old, "new": new, "proof": proof})
            if url.path == "/v1/log/proof/inclusion":
                index, size = args.get("index", -1), args.get("size", -1)
                if not 0 <= index < size <= n:
                    return self._bad(f"index {index} / size {size} outside 0..{n}")
                proof = view.log.proof(index, size)
                return self._json({"index": index, "size": size, "proof": proof})
            return self._json({"error": f"no route {url.path}", "code": "not_found"}, 404)

    return Handler


def _b64(value: bytes) -> str:
    import base64

    return base64.b64encode(value).decode()


@contextmanager
def serving(view: LogView) -> Iterator[str]:
    """The base URL of the stand-in KMS serving ``view``, on loopback, until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(view))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
