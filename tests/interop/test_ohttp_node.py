"""trustserve's OHTTP library against a client written by others (@hpke/core, bhttp-js, WebCrypto).

Node encapsulates, Python decapsulates and answers, Node opens the answer; then the
client's ``send`` mode talks HTTP to a small gateway made of this library, the way it
will talk to the real frontend.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trustserve.crypto import hpke
from trustserve.crypto.bhttp import Request, Response, decode_request, encode_response
from trustserve.crypto.ohttp import (
    KEYS_TYPE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    KeyConfig,
    decapsulate_request,
    encode_key_configs,
    request_key_id,
)
from trustserve.errors import BadRequest

PRIVATE, PUBLIC = hpke.generate_keypair()
CONFIG = KeyConfig(42, PUBLIC)


def start_exchange(node_dir: Path, *args: str) -> tuple[subprocess.Popen[str], bytes]:
    """Run ``client.mjs exchange ...``; returns the process and the request it encapsulated."""
    process = subprocess.Popen(
        ["node", "client.mjs", "exchange", *args],
        cwd=node_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        _, err = process.communicate()
        pytest.fail(f"the node client printed no request: {err}")
    return process, bytes.fromhex(line.strip())


def finish_exchange(process: subprocess.Popen[str], answer: bytes) -> dict[str, Any]:
    out, err = process.communicate(answer.hex() + "\n", timeout=120)
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize("body", [b'{"inputs": [{"name": "x", "data": [1, 2]}]}', b""])
def test_node_encapsulates_python_answers_node_opens(
    ohttp_node: Path, tmp_path: Path, body: bytes
) -> None:
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(body)
    process, sealed = start_exchange(
        ohttp_node,
        CONFIG.encode().hex(),
        "POST",
        "https://gw.example/v2/models/m/versions/1/infer",
        "--header",
        "content-type: application/json",
        "--body-file",
        str(body_file),
    )
    assert request_key_id(sealed) == 42
    plaintext, server = decapsulate_request(PRIVATE, 42, sealed)
    request = decode_request(plaintext)
    assert (request.method, request.scheme, request.authority, request.path) == (
        "POST",
        "https",
        "gw.example",
        "/v2/models/m/versions/1/infer",
    )
    assert request.header("content-type") == "application/json"
    assert parsedate_to_datetime(request.header("date") or "").tzinfo is not None
    assert request.body == body
    reply = Response(201, (("content-type", "application/json"), ("x-n", str(len(body)))), b"[1]")
    result = finish_exchange(process, server.seal_response(encode_response(reply)))
    assert result["status"] == 201
    assert result["headers"] == {"content-type": "application/json", "x-n": str(len(body))}
    assert result["body"] == "[1]"


def test_node_opens_a_binary_answer_and_takes_the_key_config_as_a_base64_list(
    ohttp_node: Path,
) -> None:
    keys = base64.b64encode(encode_key_configs([CONFIG])).decode()
    process, sealed = start_exchange(ohttp_node, keys, "GET", "https://gw.example/v2/health/ready")
    plaintext, server = decapsulate_request(PRIVATE, 42, sealed)
    assert decode_request(plaintext).path == "/v2/health/ready"
    payload = os.urandom(300)
    answer = server.seal_response(encode_response(Response(200, (), payload)))
    assert base64.b64decode(finish_exchange(process, answer)["body_b64"]) == payload


def test_node_refuses_a_tampered_answer(ohttp_node: Path) -> None:
    process, sealed = start_exchange(ohttp_node, CONFIG.encode().hex(), "GET", "https://g/")
    _, server = decapsulate_request(PRIVATE, 42, sealed)
    answer = bytearray(server.seal_response(encode_response(Response(200, (), b"ok"))))
    answer[-1] ^= 1
    _, err = process.communicate(bytes(answer).hex() + "\n", timeout=120)
    assert process.returncode == 1
    assert "ohttp client:" in err


# -- send mode against a gateway made of the library ----------------------------------------


@dataclass
class Gateway:
    """A tiny OHTTP gateway: key discovery and POST /v2/ohttp/{model}/{version}."""

    url: str = ""
    seen: list[Request] = field(default_factory=list)


def gateway_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/.well-known/ohttp-gateway":
                self.reply(200, KEYS_TYPE, encode_key_configs([CONFIG]))
            else:
                self.reply(404, "text/plain", b"not found")

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["content-length"]))
            parts = self.path.split("/")
            if parts[:3] != ["", "v2", "ohttp"] or len(parts) != 5:
                return self.reply(404, "text/plain", b"not found")
            if self.headers["content-type"] != REQUEST_TYPE:
                return self.reply(415, "text/plain", b"want message/ohttp-req")
            try:
                if request_key_id(data) != CONFIG.key_id:
                    return self.reply(400, "application/problem+json", b'{"title": "key id"}')
                plaintext, server = decapsulate_request(PRIVATE, CONFIG.key_id, data)
                request = decode_request(plaintext)
            except BadRequest as exc:
                return self.reply(400, "text/plain", str(exc).encode())
            gateway.seen.append(request)
            model, version = parts[3], parts[4]
            if request.path != f"/v2/models/{model}/versions/{version}/infer":
                inner = Response(400, (), b"route and inner path differ")
            else:
                answer = {"model_name": model, "echo": json.loads(request.body)}
                inner = Response(
                    200, (("content-type", "application/json"),), json.dumps(answer).encode()
                )
            self.reply(200, RESPONSE_TYPE, server.seal_response(encode_response(inner)))
            return None

    return Handler


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway()
    server = ThreadingHTTPServer(("127.0.0.1", 0), gateway_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def send(node_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", "client.mjs", "send", *args],
        cwd=node_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_send_discovers_keys_and_gets_the_inner_answer(ohttp_node: Path, gateway: Gateway) -> None:
    done = send(ohttp_node, gateway.url, "m", "1", "--body", '{"inputs": [1]}')
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == 200
    assert json.loads(result["body"]) == {"model_name": "m", "echo": {"inputs": [1]}}
    (request,) = gateway.seen
    assert request.method == "POST" and request.header("date")
    assert request.header("content-type") == "application/json"


def test_send_with_a_key_config_the_gateway_does_not_hold_is_refused(
    ohttp_node: Path, gateway: Gateway
) -> None:
    stray = KeyConfig(43, hpke.generate_keypair()[1]).encode().hex()
    done = send(ohttp_node, gateway.url, "m", "1", "--key-config", stray, "--body", "{}")
    assert done.returncode == 2
    assert "gateway answered 400" in done.stderr and "key id" in done.stderr
    assert gateway.seen == []


def relay_handler(gateway: Gateway, seen: list[dict[str, str]]) -> type[BaseHTTPRequestHandler]:
    """A relay as RFC 9458 section 6.2 has it: forwards the body only, not the client's headers."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(dict(self.headers))
            body = self.rfile.read(int(self.headers["content-length"]))
            forward = urllib.request.Request(
                f"{gateway.url}/v2/ohttp/m/1",
                data=body,
                headers={"content-type": REQUEST_TYPE},
                method="POST",
            )
            with urllib.request.urlopen(forward, timeout=60) as answer:
                status, kind, data = answer.status, answer.headers["content-type"], answer.read()
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def test_send_via_a_relay_with_the_key_config_from_elsewhere(
    ohttp_node: Path, gateway: Gateway
) -> None:
    relayed: list[dict[str, str]] = []
    relay = ThreadingHTTPServer(("127.0.0.1", 0), relay_handler(gateway, relayed))
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        relay_url = f"http://127.0.0.1:{relay.server_address[1]}/relay"
        config = CONFIG.encode().hex()
        args = ("--key-config", config, "--via", relay_url, "--body", '{"inputs": [2]}')
        done = send(ohttp_node, gateway.url, "m", "1", *args)
    finally:
        relay.shutdown()
        relay.server_close()
        thread.join()
    assert done.returncode == 0, done.stderr
    assert json.loads(json.loads(done.stdout)["body"])["echo"] == {"inputs": [2]}
    assert len(relayed) == 1 and relayed[0]["content-type"] == REQUEST_TYPE
    assert len(gateway.seen) == 1
