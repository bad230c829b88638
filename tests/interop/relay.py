"""An Oblivious Relay Resource as RFC 9458 describes it (sections 5 and 6.2), for tests.

What a third party (Cloudflare's or Fastly's OHTTP relay service, say) runs in front of
a gateway: it accepts ``POST`` of ``message/ohttp-req`` at its own URL and forwards the
body, and only the body with its ``Content-Type``, to the one gateway URL it is
configured for, over its own connection (from its own source address). Nothing the
client sent about itself goes on: not its address (no ``X-Forwarded-For``, ``Forwarded``
or ``Via`` is added), not its cookies, ``User-Agent``, ``Authorization`` or any other
header. The gateway's status and ``message/ohttp-res`` body come back the same way, with
only the ``Content-Type`` (and the body's length).

Written from the RFC, not from a relay's code. ``Relay.seen`` keeps each exchange so a
test can show what a relay holds: who asked, and ciphertext.

    python -m tests.interop.relay --gateway https://127.0.0.1:8080/v2/ohttp/tiny/1 \\
        --ca ~/.trustserve/tls/ca.pem [--listen 127.0.0.3:0] [--source 127.0.0.3]

prints the relay's URL and serves until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import httpx

REQUEST_TYPE = "message/ohttp-req"
RESPONSE_TYPE = "message/ohttp-res"
MAX_BODY = 1 << 20  # an encapsulated request larger than this is refused (413)


@dataclass(frozen=True)
class Exchange:
    """One relayed request as the relay saw it."""

    client: str  # the client's address: the one thing the relay learns about it
    received_headers: dict[str, str]  # lower-case names
    received_body: bytes
    forwarded_headers: dict[str, str]  # what went to the gateway
    forwarded_body: bytes
    status: int
    answer: bytes  # the gateway's body, passed back


class Relay:
    """The relay, serving on ``listen`` in a thread of this process until ``close``.

    ``gateway``: the one gateway URL it forwards to; ``source``: the address it connects
    to the gateway from; ``ca``: the CA that authenticates the gateway's certificate.
    """

    def __init__(
        self,
        gateway: str,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        source: str | None = None,
        ca: Path | None = None,
        path: str = "/",
    ) -> None:
        self.gateway = gateway
        self.path = path
        self.seen: list[Exchange] = []
        self._lock = threading.Lock()
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            verify = ssl.create_default_context(cafile=str(ca))
        self._upstream = httpx.Client(
            transport=httpx.HTTPTransport(verify=verify, local_address=source),
            headers={"User-Agent": "trustserve-test-relay"},  # the relay's own, not the client's
            timeout=60,
        )
        self._server = ThreadingHTTPServer(listen, _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def forward(self, body: bytes) -> tuple[int, str, bytes, dict[str, str]]:
        """The gateway's (status, content type, body) for ``body``; the headers sent."""
        request = self._upstream.build_request(
            "POST", self.gateway, content=body, headers={"Content-Type": REQUEST_TYPE}
        )
        response = self._upstream.send(request)
        sent = {k.decode().lower(): v.decode() for k, v in request.headers.raw}
        media = response.headers.get("content-type", "application/octet-stream")
        return response.status_code, media, response.content, sent

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self.seen.append(exchange)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._upstream.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _handler(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path != relay.path:
                return self._refuse(404, f"this relay serves {relay.path} only")
            media = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media != REQUEST_TYPE:
                return self._refuse(415, f"a relay takes {REQUEST_TYPE}, not {media or 'none'}")
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                return self._refuse(411, "a Content-Length is needed")
            if int(length) > MAX_BODY:
                return self._refuse(413, f"an encapsulated request is at most {MAX_BODY} bytes")
            body = self.rfile.read(int(length))
            try:
                status, media, answer, sent = relay.forward(body)
            except httpx.HTTPError as exc:
                return self._refuse(502, f"the gateway did not answer: {type(exc).__name__}")
            relay.record(
                Exchange(
                    self.client_address[0],
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    sent,
                    body,
                    status,
                    answer,
                )
            )
            self._answer(status, media, answer)

        def do_GET(self) -> None:
            self._refuse(405, "a relay takes POST of message/ohttp-req only")

        do_PUT = do_DELETE = do_PATCH = do_GET

        def _refuse(self, status: int, message: str) -> None:
            # A body left unread must not be taken for a request, so the connection ends
            # here; saying so in the answer keeps the client from sending its next request
            # on it (it would find the connection closed under it).
            self._answer(status, "text/plain; charset=utf-8", message.encode(), close=True)

        def _answer(self, status: int, media: str, body: bytes, close: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")  # also sets close_connection
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a relay's log is its own business; the test reads ``seen``

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="an OHTTP relay (RFC 9458) for tests")
    parser.add_argument("--gateway", required=True, help="the gateway URL it forwards to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (0: any free port)")
    parser.add_argument("--source", help="the address it connects to the gateway from")
    parser.add_argument("--ca", type=Path, help="the CA of the gateway's certificate")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    relay = Relay(args.gateway, listen=(host, int(port)), source=args.source, ca=args.ca)
    print(relay.url, flush=True)
    # Stop on Ctrl-C or SIGTERM. Set explicitly: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then installs no handler.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    relay.close()


if __name__ == "__main__":
    main()
