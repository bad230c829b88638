"""The recovering KMS over HTTP(S): what ``trustserve kms recover`` serves until it has the key.

    GET  /v1/recovery/evidence?nonce=   (32 bytes, base64url; required) -> {"identity_public_key",
                                        "recovery_public_key", "nonce", "evidence", status...}
    POST /v1/recovery/shares            {"sealed": b64} -> {"threshold", "received", "needed",
                                        "recovered"}
    GET  /v1/recovery/status            the same status, without a share
    GET  /healthz

No route releases or provisions anything: this process holds no key until the
owners' shares rebuild it, and then it only stores it (``trustserve.kms.recovery``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustserve.errors import BadRequest, TrustserveError
from trustserve.keyrelease.bundle import parse_nonce
from trustserve.kms.app import read_json
from trustserve.kms.budgets import FreshEvidenceBudgets, FreshEvidenceOptions
from trustserve.kms.peers import Peers
from trustserve.kms.recovery import RecoverySession
from trustserve.responses import handle_error, handle_http_error, json_response


def create_recovery_app(
    session: RecoverySession, budgets: FreshEvidenceBudgets | None = None
) -> Starlette:
    """``budgets`` meter the evidence made per peer address (as ``kms serve`` meters bundles)."""
    budgets = budgets or FreshEvidenceBudgets(FreshEvidenceOptions())
    peers = Peers()

    async def evidence(request: Request) -> Response:
        nonce = parse_nonce(request.query_params.get("nonce"))
        if nonce is None:
            raise BadRequest("nonce is required: evidence is made for each owner's fresh nonce")
        budgets.take(peers.requester(request.client.host if request.client else "", {}))
        return json_response(await run_in_threadpool(session.evidence, nonce))

    async def share(request: Request) -> Response:
        body: Any = await read_json(request)
        sealed = body.get("sealed") if isinstance(body, dict) else None
        if not isinstance(sealed, str):
            raise BadRequest('body must be {"sealed": base64 of the share sealed to this KMS}')
        try:
            blob = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("sealed is not valid base64") from None
        return json_response(await run_in_threadpool(session.accept, blob))

    async def status(request: Request) -> Response:
        return json_response(session.status())

    async def healthz(request: Request) -> Response:
        return json_response({"status": "recovering"})

    routes = [
        Route("/v1/recovery/evidence", evidence, methods=["GET"]),
        Route("/v1/recovery/shares", share, methods=["POST"]),
        Route("/v1/recovery/status", status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: handle_http_error, TrustserveError: handle_error},
    )
