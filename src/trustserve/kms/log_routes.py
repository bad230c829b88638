"""The KMS's transparency log over HTTP (public, read-only; ``docs/transparency.md``).

    GET /v1/log/checkpoint                      the newest checkpoint (signed note, text)
    GET /v1/log/entries?start=S&end=E           entries S..E-1 (at most 1000)
    GET /v1/log/proof/consistency?old=M&new=N   RFC 9162 consistency proof, base64 hashes
    GET /v1/log/proof/inclusion?index=I&size=N  RFC 9162 inclusion proof, base64 hashes

Every bad parameter is a 400 naming it; bounds are checked before any hashing.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from trustserve.errors import BadRequest
from trustserve.kms.service import KmsService
from trustserve.responses import json_response
from trustserve.transparency import log as tlog

MAX_DIGITS = 18


def _int(request: Request, name: str) -> int:
    text = request.query_params.get(name)
    if text is None:
        raise BadRequest(f"query parameter {name} is required (a whole number)")
    if not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        raise BadRequest(
            f"query parameter {name} must be a whole number of at most {MAX_DIGITS} digits"
        )
    return int(text)


def log_routes(service: KmsService) -> list[Route]:
    async def checkpoint(request: Request) -> Response:
        def signed() -> str:
            return service.state.log_view().signed_with_cosignatures(service.log_signer())

        text = await run_in_threadpool(signed)
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8")

    async def entries(request: Request) -> Response:
        start, end = _int(request, "start"), _int(request, "end")
        return json_response(service.state.log_view().page(start, end))

    async def consistency(request: Request) -> Response:
        old, new = _int(request, "old"), _int(request, "new")
        view = service.state.log_view()
        proof = await run_in_threadpool(view.consistency, old, new)
        return json_response({"old": old, "new": new, "proof": tlog.b64_proof(proof)})

    async def inclusion(request: Request) -> Response:
        index, size = _int(request, "index"), _int(request, "size")
        view = service.state.log_view()
        proof = await run_in_threadpool(view.inclusion, index, size)
        return json_response({"index": index, "size": size, "proof": tlog.b64_proof(proof)})

    return [
        Route("/v1/log/checkpoint", checkpoint, methods=["GET"]),
        Route("/v1/log/entries", entries, methods=["GET"]),
        Route("/v1/log/proof/consistency", consistency, methods=["GET"]),
        Route("/v1/log/proof/inclusion", inclusion, methods=["GET"]),
    ]
