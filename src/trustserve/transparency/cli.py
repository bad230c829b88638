"""``trustserve witness init|serve``: run an independent witness for a KMS's transparency log.

A witness needs no TEE and holds no secret of the KMS: its own Ed25519 key (a file written
0600 by ``init``) and the record of the last checkpoint it cosigned per log. It listens on
127.0.0.1 by default; cosignatures authenticate themselves, so a reverse proxy may add TLS.
"""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path
from typing import Any

from trustserve.errors import ConfigError
from trustserve.transparency.note import COSIGNATURE_V1, Signer, Verifier

MAX_BODY = 16 * 1024


def _load_signer(path: Path) -> Signer:
    """The key file of ``witness init``: the witness's name, then its base64 Ed25519 seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        name, encoded = path.read_text().split()
        seed = base64.b64decode(encoded, validate=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not a witness key (trustserve witness init): {err}") from None
    if len(seed) != 32:
        raise ConfigError(f"{path} is not a witness key (trustserve witness init)")
    return Signer(name, COSIGNATURE_V1, Ed25519PrivateKey.from_private_bytes(seed))


def _init(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    path: Path = args.key
    if not args.name or any(c.isspace() or c == "+" for c in args.name):
        raise ConfigError("a witness name has no spaces and no '+' (e.g. witness.example/w1)")
    if path.exists():
        raise ConfigError(f"{path} exists; a witness keeps its key (delete it to start anew)")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{args.name}\n{base64.b64encode(seed).decode()}\n")
    print(Signer(args.name, COSIGNATURE_V1, private).verifier.vkey())
    return 0


def build_app(witness: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def add_checkpoint(request: Request) -> PlainTextResponse:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY:
            return PlainTextResponse(f"a body with a Content-Length up to {MAX_BODY}\n", 413)
        answer = witness.add_checkpoint(await request.body())
        return PlainTextResponse(answer.body, answer.status, media_type=answer.content_type)

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from trustserve.transparency.witness import Witness

    logs: dict[str, list[Verifier]] = {}
    for text in args.log:
        verifier = Verifier.from_vkey(text)
        logs.setdefault(verifier.name, []).append(verifier)
    if not logs:
        raise ConfigError("name at least one log to witness: --log VKEY")
    witness = Witness(_load_signer(args.key), logs, args.state)
    print(f"witness {witness.signer.verifier.vkey()} on {args.host}:{args.port}", flush=True)
    uvicorn.run(build_app(witness), host=args.host, port=args.port, log_level="warning")
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("witness", help="an independent witness of a KMS transparency log")
    commands = group.add_subparsers(dest="witness_command", required=True)
    init = commands.add_parser("init", help="make a witness key; prints its verifier key")
    init.add_argument("--key", type=Path, required=True, help="where to write the key (0600)")
    init.add_argument("--name", required=True, help="the witness's name, e.g. witness.example/w1")
    init.set_defaults(func=_init)
    serve = commands.add_parser("serve", help="cosign checkpoints that extend the last one")
    serve.add_argument("--key", type=Path, required=True, help="the key file of `witness init`")
    serve.add_argument("--log", action="append", default=[], help="a log's verifier key")
    serve.add_argument("--state", type=Path, required=True, help="the record of cosigned sizes")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.set_defaults(func=_serve)
