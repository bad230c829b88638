"""The client's half of Oblivious HTTP (RFC 9458): encapsulate an ordinary request, open
the answer. docs/ohttp.md says what is encapsulated and what each party sees.

The request inside is the ordinary inference request as Binary HTTP (RFC 9292): ``POST
/v2/models/{m}/versions/{v}/infer`` (v2 tensors) or ``/predictions/{m}/{v}`` (a TorchServe
body), with a ``date`` header for the worker's replay window. It is encapsulated only to
the verified attestation bundle's current key config, the one every client uses
(``ServingTarget.attested_ohttp_config``), and posted to the gateway URL
``/v2/ohttp/{m}/{v}``, which names the same model and version in the clear for routing;
the worker refuses an inner path that differs from its own.

The gateway's answer is 200 ``message/ohttp-res`` whatever the worker said: the real status
is the inner response's. Any other answer is a refusal from before any worker opened the
request (an error body, say an unknown key config id), or, with status 200, a forgery.
"""

from __future__ import annotations

import email.utils
import re
import time

import httpx

from trustserve.crypto import bhttp, ohttp
from trustserve.errors import BadRequest, BrokerTampered, CannotOpenSealed

GATEWAY_PATH = "/v2/ohttp/{model}/{version}"
HEADER_LENGTH = "inference-header-content-length"
_LENGTH = re.compile(r"[0-9]{1,18}")  # a header length: ASCII digits that int converts at once


def gateway_path(model: str, version: str) -> str:
    return GATEWAY_PATH.format(model=model, version=version)


def inner_path(model: str, version: str, raw: bool) -> str:
    """The ordinary URL the encapsulated request names (always with its version)."""
    if raw:
        return f"/predictions/{model}/{version}"
    return f"/v2/models/{model}/versions/{version}/infer"


def inner_request(
    path: str, body: bytes, headers: dict[str, str] | None = None, now: float | None = None
) -> bhttp.Request:
    """A ``POST`` of ``body`` to ``path``, dated ``now`` (an HTTP-date, RFC 9110)."""
    date = email.utils.formatdate(time.time() if now is None else now, usegmt=True)
    fields = [(k.lower(), v) for k, v in (headers or {}).items()] + [("date", date)]
    return bhttp.Request("POST", "https", "", path, tuple(fields), body)


def encapsulate(
    config: ohttp.KeyConfig, request: bhttp.Request
) -> tuple[bytes, ohttp.ClientContext]:
    """``message/ohttp-req`` bytes for ``request`` and the context that opens its answer.
    ``config`` must be one the verified bundle holds (the caller checked)."""
    return ohttp.encapsulate_request(config, bhttp.encode_request(request))


def v2_headers(header_length: int | None) -> dict[str, str]:
    if header_length is None:
        return {"content-type": "application/json"}
    return {"content-type": "application/octet-stream", HEADER_LENGTH: str(header_length)}


def open_answer(context: ohttp.ClientContext, response: httpx.Response) -> bhttp.Response | None:
    """The worker's answer inside ``response``; None when the gateway refused the request in
    the clear (an error status: the caller reads its error body). A 200 that is not an
    encapsulated answer, or does not open, is refused (BrokerTampered)."""
    if response.status_code != 200:
        return None
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media != ohttp.RESPONSE_TYPE:
        raise BrokerTampered("the answer to an OHTTP request is not encapsulated: refused")
    try:
        return bhttp.decode_response(context.open_response(response.content))
    except CannotOpenSealed:
        raise BrokerTampered("the encapsulated answer failed authentication: refused") from None
    except BadRequest:  # authenticated, yet no Binary HTTP: a worker's bug, not an answer
        raise BrokerTampered("the encapsulated answer is not a Binary HTTP response") from None


def header_length(response: bhttp.Response) -> int | None:
    value = response.header(HEADER_LENGTH)
    if value is None:
        return None
    if not _LENGTH.fullmatch(value):  # not isdigit: it takes "1\u00b2", which int refuses
        raise BrokerTampered(f"the encapsulated answer's {HEADER_LENGTH} is not a number")
    return int(value)
