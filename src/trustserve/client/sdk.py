"""The trustserve client: numpy in, numpy out; sealed end to end by default.

Sealed: fetch the attestation bundle, verify it against the client's policy,
HPKE-seal the request to the verified serving key, open the sealed answer.
OHTTP (``ohttp=True``): the same request as Binary HTTP, encapsulated (RFC 9458) to the
verified bundle's key config (``client/ohttp.py``), so it can pass a third-party relay.
Standard: an ordinary Open Inference Protocol request over verified TLS. The
request building and answer reading are shared by the sync and async clients;
only the transport differs.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
import numpy.typing as npt

from trustserve.client import ohttp as oh
from trustserve.client.verify import ClientPolicy, ServingTarget, new_nonce, verify
from trustserve.crypto import ohttp
from trustserve.crypto.sealing import (
    ATTESTATION_PATH,
    CONTENT_TYPE,
    KEY_ID_HEADER,
    ResponseKey,
    Route,
    open_response,
    seal_request,
)
from trustserve.errors import (
    BrokerTampered,
    CannotOpenSealed,
    DeadlineExceeded,
    TrustserveError,
    UnknownKeyId,
    UnknownOhttpKey,
)
from trustserve.keyrelease.bundle import encode_nonce
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


@dataclass(frozen=True)
class JobHandle:
    """An async job: its id and where to fetch it. It holds the request's reply key (sealed
    mode), so only the client that submitted it can open the answer: keep it in memory."""

    id: str
    location: str
    prepared: Prepared


ASYNC = {"Prefer": "respond-async"}


def _accepted(prepared: Prepared, response: httpx.Response) -> JobHandle:
    if response.status_code != 202:
        raise _error(response)
    location = response.headers.get("location", "")
    if not location.startswith("/v2/jobs/"):
        raise ServerError(502, "an accepted async job came without its /v2/jobs location")
    return JobHandle(location.rsplit("/", 1)[1], location, prepared)


def _stale_key(exc: ServerError) -> bool:
    """The serving key we sealed to is not held any more: fetch the bundle again, retry once."""
    return exc.code in (UnknownKeyId.code, UnknownOhttpKey.code)


def _fresh(refresh: bool) -> dict[str, str]:
    """Asks the frontend for a bundle fresh from the KMS (it may cache one briefly)."""
    return {"Cache-Control": "no-cache"} if refresh else {}


def _bundle_request(policy: ClientPolicy) -> tuple[str, bytes | None]:
    """The attestation path to GET, with a fresh nonce if the policy asks for one."""
    if not policy.send_nonce:
        return ATTESTATION_PATH, None
    nonce = new_nonce()
    return f"{ATTESTATION_PATH}?nonce={encode_nonce(nonce)}", nonce


def _tls(ca: Path | str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca)) if ca else True


H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class _Base(Generic[H]):
    """What the sync and async clients share: the policy, the mode, the verified target."""

    def __init__(
        self,
        url: str,
        *,
        policy: ClientPolicy | None = None,
        ca: Path | str | None = None,
        sealed: bool = True,
        timeout: float = 60.0,
        ohttp: bool = False,
        ohttp_key_config: bytes | None = None,
    ) -> None:
        if sealed and policy is None:
            raise ValueError("sealed requests need a ClientPolicy to verify the server against")
        if (ohttp or ohttp_key_config is not None) and not sealed:
            raise ValueError("OHTTP requests are sealed requests: not with sealed=False")
        self.policy = policy
        self.sealed = sealed
        # the key config to encapsulate to (from the caller or discovery): used only if the
        # verified bundle holds it; None: the bundle's current one
        self.ohttp = ohttp or ohttp_key_config is not None
        self.ohttp_key_config = ohttp_key_config
        self._target: ServingTarget | None = None
        self._http: H = self._open(url.rstrip("/"), _tls(ca), timeout)

    def _open(self, base_url: str, verify: ssl.SSLContext | bool, timeout: float) -> H:
        raise NotImplementedError

    def _usable(self, refresh: bool) -> ServingTarget | None:
        """The verified target, unless a refresh is asked for or its key list is older than
        the policy allows (so a long-lived client follows a rotation within that bound)."""
        target = self._target
        if target is None or refresh or self.policy is None:
            return None
        if time.time() - target.issued_at > self.policy.max_bundle_age_s:
            return None
        return target

    def _prepare(
        self,
        model: str,
        version: str | None,
        inputs: Arrays | None,
        raw: bytes | None,
        target: ServingTarget | None,
    ) -> Prepared:
        """The request in this client's mode; an OHTTP key config that the verified bundle
        does not hold is refused here, before anything is sent (AttestationRefused)."""
        config = None
        if self.ohttp and target is not None:
            config = target.attested_ohttp_config(self.ohttp_key_config)
        return prepare(model, version, inputs, raw, target, config)


class TrustserveClient(_Base[httpx.Client]):
    """Sync client; ``policy`` is what the server's attestation must satisfy (sealed mode)."""

    def _open(self, base_url: str, verify: ssl.SSLContext | bool, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=base_url, verify=verify, timeout=timeout)

    def verify(self, refresh: bool = False) -> ServingTarget:
        """Fetch and verify the attestation bundle; nothing is sent before this succeeds."""
        target = self._usable(refresh)
        if target is None:
            assert self.policy is not None
            path, nonce = _bundle_request(self.policy)
            r = self._http.get(path, headers=_fresh(refresh))
            if r.status_code != 200:
                raise _error(r)
            target = self._target = verify(r.json(), self.policy, nonce=nonce)
        return target

    def infer(self, model: str, inputs: Arrays, version: str | None = None) -> Arrays:
        answer: Arrays = self._send(model, version, inputs, None)
        return answer

    def predict(self, model: str, body: bytes, version: str | None = None) -> Any:
        """A raw body (image bytes or JSON), as TorchServe takes it: top-k for classifiers."""
        return self._send(model, version, None, body)

    def _send(
        self, model: str, version: str | None, inputs: Arrays | None, raw: bytes | None
    ) -> Any:
        for attempt in (0, 1):
            target = self.verify(refresh=attempt > 0) if self.sealed else None
            p = self._prepare(model, version, inputs, raw, target)
            try:
                return read_answer(p, self._http.post(p.path, content=p.body, headers=p.headers))
            except ServerError as exc:
                if not (self.sealed and attempt == 0 and _stale_key(exc)):
                    raise
        raise AssertionError("unreachable")

    def submit(
        self,
        model: str,
        inputs: Arrays | None = None,
        version: str | None = None,
        *,
        raw: bytes | None = None,
    ) -> JobHandle:
        """Queue ``inputs`` (or a ``raw`` body, as ``predict`` takes) as an async job.

        Checked at once (a bad request raises ``ServerError`` here); the answer waits on the
        server for ``result``. Sealed like ``infer`` unless the client is standard.
        """
        if (inputs is None) == (raw is None):
            raise ValueError("submit takes inputs or raw, not both and not neither")
        for attempt in (0, 1):
            target = self.verify(refresh=attempt > 0) if self.sealed else None
            p = self._prepare(model, version, inputs, raw, target)
            headers = {**p.headers, **ASYNC}
            try:
                return _accepted(p, self._http.post(p.path, content=p.body, headers=headers))
            except ServerError as exc:
                if not (self.sealed and attempt == 0 and _stale_key(exc)):
                    raise
        raise AssertionError("unreachable")

    def result(self, job: JobHandle, wait: bool = True, timeout: float = 60.0) -> Any:
        """The job's answer, as ``infer``/``predict`` would give it (``ServerError`` for an
        error answer). Pending: ``wait`` polls up to ``timeout`` seconds, then raises
        ``DeadlineExceeded``; without ``wait`` returns None."""
        until = time.monotonic() + timeout
        pause = 0.05
        while True:
            response = self._http.get(job.location)
            if response.status_code != 202:
                return read_answer(job.prepared, response)
            if not wait:
                return None
            if time.monotonic() + pause > until:
                raise DeadlineExceeded(f"job {job.id} still pending after {timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TrustserveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTrustserveClient(_Base[httpx.AsyncClient]):
    """The same as ``TrustserveClient``, for asyncio."""

    def _open(
        self, base_url: str, verify: ssl.SSLContext | bool, timeout: float
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, verify=verify, timeout=timeout)

    async def verify(self, refresh: bool = False) -> ServingTarget:
        target = self._usable(refresh)
        if target is None:
            assert self.policy is not None
            path, nonce = _bundle_request(self.policy)
            r = await self._http.get(path, headers=_fresh(refresh))
            if r.status_code != 200:
                raise _error(r)
            target = self._target = verify(r.json(), self.policy, nonce=nonce)
        return target

    async def infer(self, model: str, inputs: Arrays, version: str | None = None) -> Arrays:
        answer: Arrays = await self._send(model, version, inputs, None)
        return answer

    async def predict(self, model: str, body: bytes, version: str | None = None) -> Any:
        return await self._send(model, version, None, body)

    async def _send(
        self, model: str, version: str | None, inputs: Arrays | None, raw: bytes | None
    ) -> Any:
        for attempt in (0, 1):
            target = await self.verify(refresh=attempt > 0) if self.sealed else None
            p = self._prepare(model, version, inputs, raw, target)
            try:
                response = await self._http.post(p.path, content=p.body, headers=p.headers)
                return read_answer(p, response)
            except ServerError as exc:
                if not (self.sealed and attempt == 0 and _stale_key(exc)):
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTrustserveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
