"""The trustserve client: numpy in, numpy out; sealed end to end by default.

Sealed: fetch the attestation bundle, verify it against the client's policy,
HPKE-seal the request to the verified serving key, open the sealed answer.
OHTTP (``ohttp=True``): the same request as Binary HTTP, encapsulated (RFC 9458) to the
verified bundle's key config (``client/ohttp.py``), so it can pass a third-party relay.
Standard: an ordinary Open Inference Protocol request over verified TLS. The
request building and answer reading (``client/messages.py``) are shared by the sync
and async clients; only the transport differs.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from trustserve.client.messages import Arrays as Arrays
from trustserve.client.messages import Prepared as Prepared
from trustserve.client.messages import ServerError as ServerError
from trustserve.client.messages import _error
from trustserve.client.messages import prepare as prepare
from trustserve.client.messages import read_answer as read_answer
from trustserve.client.verify import ClientPolicy, ServingTarget, new_nonce, verify
from trustserve.crypto.sealing import ATTESTATION_PATH, TRANSPARENCY_CONSISTENCY_PATH
from trustserve.errors import AttestationRefused, DeadlineExceeded, UnknownKeyId, UnknownOhttpKey
from trustserve.keyrelease.bundle import encode_nonce
from trustserve.transparency.routes import read_proof
from trustserve.transparency.store import CheckpointStore
from trustserve.transparency.verify import proof_needed


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


def _consistency_query(old: int, new: int) -> str:
    """Where the frontend passes on the KMS log's consistency proof from ``old`` to ``new``."""
    return f"{TRANSPARENCY_CONSISTENCY_PATH}?old={old}&new={new}"


def _proof(response: httpx.Response, old: int, new: int) -> list[bytes]:
    if response.status_code != 200:
        raise _error(response)
    return read_proof(response.json(), old=old, new=new)


def _older_than_stored(exc: AttestationRefused) -> bool:
    """A checkpoint older than the one this client stored: a frontend's cached bundle may
    predate it (without a nonce), so the bundle is fetched fresh once before refusing."""
    return exc.claim == "transparency.rollback"


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
        # None (the default): the verified bundle's current key config. A caller's config is
        # used only if it is exactly that one (never the previous key's, never discovery's
        # pick: a config other clients do not use would single this client out)
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
        """The request in this client's mode; an OHTTP key config other than the verified
        bundle's current one is refused here, before anything is sent (AttestationRefused)."""
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
            try:
                target = self._fetch(refresh)
            except AttestationRefused as exc:
                if refresh or not _older_than_stored(exc):
                    raise
                target = self._fetch(True)
            self._target = target
        return target

    def _fetch(self, refresh: bool) -> ServingTarget:
        assert self.policy is not None
        path, nonce = _bundle_request(self.policy)
        r = self._http.get(path, headers=_fresh(refresh))
        if r.status_code != 200:
            raise _error(r)
        return verify(r.json(), self.policy, nonce=nonce, consistency=self._consistency)

    def _consistency(self, old: int, new: int) -> list[bytes]:
        """The log's consistency proof, through the frontend (it proves itself)."""
        return _proof(self._http.get(_consistency_query(old, new)), old, new)

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
            try:
                target = await self._fetch(refresh)
            except AttestationRefused as exc:
                if refresh or not _older_than_stored(exc):
                    raise
                target = await self._fetch(True)
            self._target = target
        return target

    async def _fetch(self, refresh: bool) -> ServingTarget:
        assert self.policy is not None
        path, nonce = _bundle_request(self.policy)
        r = await self._http.get(path, headers=_fresh(refresh))
        if r.status_code != 200:
            raise _error(r)
        bundle = r.json()
        proofs = await self._prefetch(bundle)
        return verify(bundle, self.policy, nonce=nonce, consistency=lambda o, n: proofs[(o, n)])

    async def _prefetch(self, bundle: Any) -> dict[tuple[int, int], list[bytes]]:
        """The consistency proof ``verify`` will need (it runs without I/O), fetched first."""
        assert self.policy is not None
        if self.policy.transparency is None or not isinstance(bundle, dict):
            return {}
        sizes = proof_needed(bundle.get("transparency"), CheckpointStore(self.policy.checkpoints))
        if sizes is None:
            return {}
        response = await self._http.get(_consistency_query(*sizes))
        return {sizes: _proof(response, *sizes)}

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
