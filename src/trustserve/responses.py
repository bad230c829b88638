"""The one place errors become HTTP responses: status from the error, body
``{"error": message, "code": machine code}`` (the codes are drawn in ``trustserve.errors``);
and the one bearer-token check of every door that needs one (frontend management and
model repository, KMS management)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from trustserve.errors import (
    ConfigError,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    TrustserveError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(exc: TrustserveError) -> Response:
    headers = None
    if isinstance(exc, Unavailable | TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
    return status_error(exc.status, str(exc), exc.code, headers)


def status_error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> Response:
    """An error body; also how an error a worker reported for one request is passed on."""
    if status == 503 and headers is None:
        headers = {"Retry-After": "1"}
    return json_response({"error": message, "code": code}, status, headers)


async def handle_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, TrustserveError):
        return error_response(exc)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return status_error(500, "internal server error", TrustserveError.code)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) in the project's error body."""
    assert isinstance(exc, HTTPException)
    what = f"{request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == NotFound.status:
        return status_error(404, f"no route {what}", NotFound.code)
    if exc.status_code == MethodNotAllowed.status:
        allowed = headers.get("Allow", headers.get("allow", ""))
        message = f"method not allowed: {what}; allowed: {allowed}"
        return status_error(405, message, MethodNotAllowed.code, headers)
    code = TrustserveError.code if exc.status_code >= 500 else "bad_request"
    return status_error(exc.status_code, str(exc.detail), code, headers or None)


# Our own errors are answered where they happen (Starlette's ExceptionMiddleware);
# anything else is a bug: logged with its traceback and answered 500.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: handle_http_error,
    TrustserveError: handle_error,
    Exception: handle_error,
}


class BearerToken:
    """``Authorization: Bearer <token>`` (scheme in any case, RFC 9110 section 11.1),
    compared in constant time with the bytes as sent; else a 401 saying ``refusal``."""

    def __init__(self, token: str, refusal: str) -> None:
        if not token:
            raise ConfigError("an empty bearer token would admit a request without one")
        self._token = token.encode()
        self.refusal = refusal

    def accepts(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        token = given.encode("latin-1") if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(token, self._token)

    def refused(self, headers: Headers) -> Response | None:
        """None when ``headers`` carry the token, else the 401 to answer."""
        if self.accepts(headers):
            return None
        response = error_response(Unauthorized(self.refusal))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
