"""The KMS over HTTPS: an ASGI app around a ``KmsService``.

Public (attestation is the guard):
    POST /v1/challenge          -> {"nonce", "expires_at"}
    POST /v1/release            ReleaseRequest JSON -> {"key_ids", "sealed"}
    GET  /v1/attestation        the attestation bundle (needs an evidence provider);
                                ``?nonce=`` (32 bytes, base64url) for evidence bound to it
    GET  /v1/serving-keys       public serving keys, current first
    GET  /v1/log/...            the transparency log (``trustserve.kms.log_routes``)
    POST /v1/replicas/join      {"nonce", "public_key", "evidence", "release_policy",
                                "peer_policy"} -> {"sealed", "signature", "state_version"}:
                                the root key, to a replica attested under --peer-policy
                                whose policies are no weaker (``trustserve.kms.join``;
                                metered per client: 429/503)
    GET  /healthz
    GET  /openapi.json          the OpenAPI document of this API (trustserve/openapi/kms.yaml)
Management (``Authorization: Bearer <token>``, the token in ``<home>/kms/admin.token``):
    POST /v1/keys/models        {"manifest", "public_key"} -> {"key_id", "sealed"}
                                (a NEW data key HPKE-sealed to ``public_key``; 409 if the
                                model version has one: existing keys are never returned)
    GET  /v1/keys/models        public metadata of every model key
    POST /v1/keys/serving/rotate -> the new current serving key (public)
    POST /v1/log/declare        {"digest"?, "measurement"?, "note"?} -> {"index", "size"}:
                                a ``release-declared`` log entry (``trustserve.kms.declare``)
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustserve import files
from trustserve.archive import Manifest
from trustserve.attestation import EvidenceProvider
from trustserve.crypto import hpke
from trustserve.errors import (
    ArchiveError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    TrustserveError,
    Unauthorized,
)
from trustserve.keyrelease.bundle import parse_nonce
from trustserve.keyrelease.protocol import PROVISION_INFO
from trustserve.kms import declare
from trustserve.kms.join import Joins
from trustserve.kms.log_routes import log_routes
from trustserve.kms.peers import Peers, Requester
from trustserve.kms.service import KmsService
from trustserve.openapi import openapi_route
from trustserve.responses import BearerToken, handle_error, handle_http_error, json_response

MAX_BODY = 4 * 1024 * 1024


def admin_token(service: KmsService) -> str:
    """The management token, in ``<home>/kms/admin.token`` for the operator; replicas of
    one shared state all take the same one (each writes it to its own home)."""
    path = service.state.dir / "admin.token"
    shared = service.state.shared_admin_token()
    if shared is None:
        return files.read_or_create_token(path)
    if not path.exists() or path.read_text().strip() != shared:
        files.write_secret(path, shared.encode())
    return shared


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused (413) as soon as its declared or received size passes ``limit``."""
    too_large = PayloadTooLarge(f"request body over the {limit}-byte limit")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large if declared.isdigit() else BadRequest("Content-Length must be a number")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    body = await read_body(request)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None


def create_app(
    service: KmsService,
    provider: EvidenceProvider | None = None,
    token: str | None = None,
    peers: Peers | None = None,
    joins: Joins | None = None,
) -> Starlette:
    """The KMS ASGI app; ``token`` guards management (default: ``admin_token(service)``);
    ``peers`` says whom a fresh bundle is metered to (default: the peer address);
    ``joins`` grants the root key to attested replicas (default: to none)."""
    peers = peers or Peers()
    joins = joins or Joins(service, None)  # one, for its budget to hold across requests
    bearer = BearerToken(token or admin_token(service), "management needs a valid bearer token")

    def authorize(request: Request) -> None:
        if not bearer.accepts(request.headers):
            raise Unauthorized(bearer.refusal)

    async def challenge(request: Request) -> Response:
        return json_response(service.challenge())

    async def release(request: Request) -> Response:
        body = await read_json(request)
        return json_response(await run_in_threadpool(service.release, body))

    async def attestation(request: Request) -> Response:
        if provider is None:
            raise NotFound("this KMS has no evidence provider configured")
        nonce = parse_nonce(request.query_params.get("nonce"))
        who = peers.requester(request.client.host if request.client else "", request.headers)
        bundle = await run_in_threadpool(service.attestation_bundle, provider, nonce, who)
        return json_response(bundle)

    async def join(request: Request) -> Response:
        body = await read_json(request)
        peer = request.client.host if request.client else ""
        # metered per client; the reserved networks' budget is the frontends' bundles'
        who = Requester(peers.requester(peer, request.headers).key)
        return json_response(await run_in_threadpool(joins.grant, body, peer, who))

    async def serving_keys(request: Request) -> Response:
        return json_response({"keys": service.serving_public_keys()})

    async def create_model_key(request: Request) -> Response:
        authorize(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        try:
            manifest = Manifest.from_json(body.get("manifest"))
        except ArchiveError as exc:
            raise BadRequest(f"manifest: {exc}") from None
        public_key = body.get("public_key")
        if not isinstance(public_key, str):
            raise BadRequest("public_key (base64 X25519) is required")
        try:
            recipient = base64.b64decode(public_key, validate=True)
        except ValueError:
            raise BadRequest("public_key is not valid base64") from None
        hpke.check_public_key(recipient)  # before the key exists: a bad one burns no version
        key_id, data_key = await run_in_threadpool(service.provision_model_key, manifest)
        sealed = hpke.seal(recipient, data_key, aad=key_id.encode(), info=PROVISION_INFO)
        return json_response({"key_id": key_id, "sealed": base64.b64encode(sealed).decode()})

    async def list_model_keys(request: Request) -> Response:
        authorize(request)
        return json_response({"keys": service.state.model_keys()})

    async def rotate(request: Request) -> Response:
        authorize(request)
        return json_response(await run_in_threadpool(service.rotate_serving_key))

    async def declare_release(request: Request) -> Response:
        authorize(request)
        body = await read_body(request, declare.MAX_BODY)
        try:
            fields = declare.parse_declaration(orjson.loads(body))
        except orjson.JSONDecodeError:
            raise BadRequest("request body is not valid JSON") from None
        return json_response(await run_in_threadpool(service.declare_release, fields))

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    routes = [
        Route("/v1/challenge", challenge, methods=["POST"]),
        Route("/v1/release", release, methods=["POST"]),
        Route("/v1/attestation", attestation, methods=["GET"]),
        Route("/v1/serving-keys", serving_keys, methods=["GET"]),
        Route("/v1/replicas/join", join, methods=["POST"]),
        Route("/v1/keys/models", create_model_key, methods=["POST"]),
        Route("/v1/keys/models", list_model_keys, methods=["GET"]),
        Route("/v1/keys/serving/rotate", rotate, methods=["POST"]),
        Route("/v1/log/declare", declare_release, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        *log_routes(service),
        openapi_route("kms"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: handle_http_error, TrustserveError: handle_error},
    )
