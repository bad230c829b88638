"""Building one inference request (standard, sealed, OHTTP) and reading its answer: what
the sync and async clients (``client/sdk.py``) share, apart from the transport.

Sealed: HPKE-sealed to the verified serving key (``crypto/sealing.py``), the answer opened
with the request's response key. OHTTP: the ordinary request as Binary HTTP, encapsulated
to an attested key config (``client/ohttp.py``). Either answer is authenticated: one that
was forged or changed on the way is refused (BrokerTampered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from trustserve.client import ohttp as oh
from trustserve.client.verify import ServingTarget
from trustserve.crypto import ohttp
from trustserve.crypto.sealing import (
    CONTENT_TYPE,
    KEY_ID_HEADER,
    ResponseKey,
    Route,
    open_response,
    seal_request,
)
from trustserve.errors import BrokerTampered, CannotOpenSealed, TrustserveError
from trustserve.tensors import Tensor, datatype_of, encode_binary, parse_response

Arrays = dict[str, npt.NDArray[Any]]


class ServerError(TrustserveError):
    """The server answered with an error: its HTTP ``status``, its machine ``code`` (the
    codes of ``trustserve.errors``) and message. ``sealed``: the worker sealed this error
    to us (authenticated); otherwise it came in the clear from the untrusted middle,
    which can always refuse service but never forge an answer."""

    def __init__(
        self, status: int, message: str, code: str | None = None, sealed: bool = False
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code or TrustserveError.code
        self.sealed = sealed


def _error(response: httpx.Response) -> ServerError:
    try:
        body = response.json()
        return ServerError(response.status_code, str(body["error"]), body.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ServerError(response.status_code, response.text[:500])


@dataclass
class Prepared:
    path: str
    body: bytes
    headers: dict[str, str]
    route: Route | None = None
    reply: ResponseKey | None = None
    raw: bool = False
    ohttp: ohttp.ClientContext | None = None


def _path(model: str, version: str | None, raw: bool) -> str:
    if raw:
        return f"/predictions/{model}" + (f"/{version}" if version else "")
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def _v2_body(inputs: Arrays) -> tuple[bytes, int]:
    tensors = [
        Tensor(n, datatype_of(a), tuple(a.shape), np.ascontiguousarray(a))
        for n, a in inputs.items()
    ]
    return encode_binary({"parameters": {"binary_data_output": True}}, "inputs", tensors)


def prepare(
    model: str,
    version: str | None,
    inputs: Arrays | None,
    raw: bytes | None,
    target: ServingTarget | None,
    ohttp_config: ohttp.KeyConfig | None = None,
) -> Prepared:
    """``inputs`` as v2 tensors, or ``raw`` as the TorchServe API takes it; sealed if ``target``
    (encapsulated to ``ohttp_config``, a config of ``target``'s bundle, if given).

    A sealed request names the model version resolved from the bundle's model list
    (``version``, or the default of the versions the KMS holds keys for), in its
    path and in its sealed route, so the frontend cannot route it to another version.
    """
    is_raw = raw is not None
    if raw is not None:
        body, head_len = raw, None
    else:
        assert inputs is not None
        body, head_len = _v2_body(inputs)
    if target is None:
        headers = {} if head_len is None else {"Inference-Header-Content-Length": str(head_len)}
        return Prepared(_path(model, version, is_raw), body, headers, raw=is_raw)
    version = target.resolve(model, version)  # the worker refuses any other version
    if ohttp_config is not None:
        inner = oh.inner_request(
            oh.inner_path(model, version, is_raw), body, oh.v2_headers(head_len)
        )
        encapsulated, context = oh.encapsulate(ohttp_config, inner)
        headers = {"Content-Type": ohttp.REQUEST_TYPE}
        path = oh.gateway_path(model, version)
        return Prepared(path, encapsulated, headers, raw=is_raw, ohttp=context)
    route = Route(model, version, target.key_id)
    sealed, reply = seal_request(
        target.public_key, route, body, head_len, kind="torchserve" if is_raw else "v2"
    )
    headers = {"Content-Type": CONTENT_TYPE, KEY_ID_HEADER: target.key_id}
    return Prepared(_path(model, version, False), sealed, headers, route, reply, is_raw)


def read_answer(prepared: Prepared, response: httpx.Response) -> Any:
    """Arrays for a v2 request; the JSON answer for a raw one. ServerError on an error status.

    A sealed request's answer must be sealed, with the same status inside as outside:
    anything else was forged or changed on the way and is refused (BrokerTampered).
    """
    sealed = response.headers.get("content-type", "").startswith(CONTENT_TYPE)
    head_len: int | None = None
    if prepared.ohttp is not None:
        inner = oh.open_answer(prepared.ohttp, response)
        if inner is None:
            raise _error(response)
        if inner.status != 200:
            error = _error(httpx.Response(inner.status, content=inner.body))
            raise ServerError(inner.status, error.message, error.code, sealed=True)
        body, head_len = inner.body, oh.header_length(inner)
    elif prepared.reply is not None and prepared.route is not None:
        if not sealed:
            if response.status_code == 200:
                raise BrokerTampered("the answer to a sealed request is not sealed: refused")
            raise _error(response)
        try:
            answer = open_response(prepared.reply, prepared.route, response.content)
        except CannotOpenSealed:
            raise BrokerTampered("the sealed answer failed authentication: refused") from None
        if answer.status != response.status_code:
            raise BrokerTampered(
                f"the server changed the status of a sealed answer ({answer.status} sealed, "
                f"{response.status_code} sent): refused"
            )
        if answer.status != 200:
            message = answer.body.decode(errors="replace")
            raise ServerError(answer.status, message, answer.code, sealed=True)
        body, head_len = answer.body, answer.header_length
    else:
        if response.status_code != 200:
            raise _error(response)
        body = response.content
        if "inference-header-content-length" in response.headers:
            head_len = int(response.headers["inference-header-content-length"])
    if prepared.raw:
        import orjson

        return orjson.loads(body)
    _, tensors = parse_response(body, head_len)
    return {t.name: t.data for t in tensors}
