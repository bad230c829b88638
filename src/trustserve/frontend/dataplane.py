"""The data plane: the one request path under every transport the frontend speaks.

The transports (REST v2 and TorchServe in ``inference.py``, async jobs through
``jobs.py``, gRPC in ``grpc_service.py``) parse their own wire format and hand the
data plane what they parsed. The data plane does the rest, the same for all:

1. find the model (``model``): a 404 names no model in metrics (``unknown``);
2. check the request against the model's public manifest (``v2_work``,
   ``torchserve_work``, ``sealed_work``, ``ohttp_work``): a 4xx before anything is queued;
3. admit it (``admit``): a 503 at once when no worker takes the model's queue;
4. submit one broker job (the contract in ``broker/base.py``) and await its outcome,
   or hand that wait to the transport's background runner (an async job);
5. check the outcome matches its request (``verified``), and let the transport shape it;
6. count the request in metrics, once, whatever happened.

The data plane knows no HTTP request and no protobuf message: a test drives it directly,
and REST and gRPC share each of its checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from trustserve.broker.base import Broker, Job, JobKind, JobMeta, Outcome
from trustserve.crypto import ohttp
from trustserve.crypto.sealing import ATTESTATION_PATH
from trustserve.errors import (
    BadRequest,
    BrokerTampered,
    TrustserveError,
    Unavailable,
    UnknownKeyId,
    UnknownOhttpKey,
)
from trustserve.frontend.keys import FrontendKeys
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelEntry, ModelRegistry
from trustserve.tensors import InferRequest, as_binary_request, check_against

T = TypeVar("T")
PARSE_INLINE_BYTES = 256 * 1024  # a request parsed or converted on the event loop, larger off it
LIVE_MEMO_S = 1.0  # a worker counted this recently makes its model servable (no recount)
OHTTP_KEYS_PATH = "/.well-known/ohttp-gateway"  # RFC 9540 key config discovery
UNKNOWN_MODEL = "unknown"  # the metrics label of requests for a model that is not registered


@dataclass(frozen=True)
class Work:
    """A checked request as the broker job it becomes: how the worker reads ``payload``."""

    kind: JobKind
    payload: bytes
    meta: JobMeta


# a transport's parsing of its request, once the model is known: the checked work
Prepare = Callable[[ModelEntry], Awaitable[Work]]
# a transport's encoding of the worker's answer, once ``verified``
Shape = Callable[[Work, Outcome], T]
# runs the wait for the worker in the background; answers at once (an async job's 202)
Defer = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


@dataclass
class _Count:
    """One request as metrics will count it; filled in as it goes."""

    api: str
    started: float
    model: str = UNKNOWN_MODEL  # never a name from the request: each label is kept forever
    version: str = ""
    outcome: Outcome | None = None
    done: bool = False

    def observe(self, metrics: Metrics, error: TrustserveError | None) -> None:
        """Counted once: the worker's status when it answered (an error it sent too), else
        the frontend's error's, else 500 (a failure that is no ``TrustserveError``)."""
        if self.done:
            return
        self.done = True
        outcome, status, code = self.outcome, 500, None
        if error is not None:
            status, code = error.status, error.code
        if outcome is not None and (error is None or outcome.status != 200):
            status = outcome.status  # the worker's answer, forwarded (an error too)
        meta = outcome.meta if outcome is not None else None
        if self.api == "ohttp" and meta is not None and meta.sealed:
            # what happened inside is the client's to know (docs/ohttp.md): 200, no code,
            # even from a worker that still sent its inner status in the clear
            status, code, meta = 200, None, replace(meta, code=None)
        seconds = time.perf_counter() - self.started
        metrics.observe(self.model, self.version, self.api, status, seconds, meta, code)


class DataPlane:
    """Models, admission, the broker and metrics, behind every transport.

    ``timeout_s``: a job's deadline. ``keys``: the key service's view (None: no sealed
    requests). ``require``: models ``readiness`` waits for besides any one.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        broker: Broker,
        metrics: Metrics,
        *,
        timeout_s: float,
        keys: FrontendKeys | None = None,
        require: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.keys = keys
        self.require = require
        self._seen_live: dict[str, float] = {}  # queue -> when a worker was last counted

    # -- models ---------------------------------------------------------------

    def model(self, name: str, version: str | None) -> ModelEntry:
        """The registered model (its default version for None or ""), else 404."""
        return self.registry.resolve(name, version or None)

    async def model_ready(self, entry: ModelEntry) -> bool:
        return bool(await self.broker.consumers(entry.queue))

    def metadata(self, entry: ModelEntry) -> dict[str, Any]:
        """A model's v2 metadata (REST and gRPC answer the same)."""
        m = entry.manifest
        return {
            "name": m.name,
            "versions": self.registry.versions(m.name),
            "platform": m.platform,
            "inputs": [t.to_json() for t in m.inputs],
            "outputs": [t.to_json() for t in m.outputs],
        }

    async def readiness(self) -> tuple[bool, list[str]]:
        """(ready, the models served) or (not ready, the models waited for): for every
        protocol the frontend speaks."""
        live: set[str] = set()  # model names, and ``name:version`` for each live version
        names: set[str] = set()
        for entry in self.registry.entries():
            if await self.broker.consumers(entry.queue):
                live |= {entry.manifest.name, entry.queue}
                names.add(entry.manifest.name)
        missing = [name for name in self.require if name not in live]
        if missing:
            return False, missing
        if not names:
            waiting = sorted({e.manifest.name for e in self.registry.entries()})
            return False, waiting or ["any model"]
        return True, sorted(names)

    # -- checking a request against its model ---------------------------------------

    def v2_work(
        self, entry: ModelEntry, request: InferRequest, encoded: tuple[bytes, int] | None = None
    ) -> Work:
        """A standard v2 request, checked against the model, as the job the worker reads.
        ``encoded``: the request's body and header length as the client sent them, which
        travel as they are when every input came as binary data (nothing encoded twice)."""
        check_against(request, entry.manifest)
        if encoded is not None and request.all_binary:
            payload, head_len = encoded
        else:
            payload, head_len = as_binary_request(request)
        return Work(JobKind.V2, payload, JobMeta(header_length=head_len))

    def torchserve_work(self, entry: ModelEntry, body: bytes) -> Work:
        """A TorchServe body (image bytes or JSON): the worker reads it."""
        if not body:
            raise BadRequest("request body is empty: send an image or JSON")
        return Work(JobKind.TORCHSERVE, body, JobMeta())

    async def sealed_work(
        self, entry: ModelEntry, body: bytes, key_id: str | None, version: str
    ) -> Work:
        """A sealed request, routed on the clear model name: it goes to the broker as it
        came, once its serving key id is one the key service holds."""
        if self.keys is None:
            raise BadRequest("this server has no key service: send a standard request")
        known = await self.keys.serving_key_ids(expect=key_id)
        if not known:
            raise Unavailable("the key service holds no valid serving key")
        if key_id not in known:
            raise UnknownKeyId(
                f"unknown serving key id {key_id!r}; the current key id is {known[0]!r}: "
                f"fetch {ATTESTATION_PATH} again"
            )
        return Work(JobKind.SEALED, body, JobMeta(key_id=key_id, version=version))

    async def ohttp_work(self, entry: ModelEntry, body: bytes, version: str) -> Work:
        """An encapsulated request (RFC 9458), routed on the model in its gateway URL and
        the key config id in its first byte: it goes to the broker as it came (never
        decapsulated here), once that id names a serving key the key service holds."""
        if self.keys is None:
            raise BadRequest("this server has no key service: no OHTTP gateway")
        if not body:
            raise BadRequest("request body is empty: send an encapsulated request")
        try:
            config_id = ohttp.request_key_id(body)
        except BadRequest as exc:
            raise BadRequest(f"not an encapsulated request (RFC 9458 section 4.3): {exc}") from None
        known = await self.keys.ohttp_keys(expect=config_id)
        if not known:
            raise Unavailable("the key service publishes no current OHTTP key config")
        if config_id not in known:
            raise UnknownOhttpKey(
                f"unknown OHTTP key config id {config_id}; the current one is "
                f"{next(iter(known))}: fetch {OHTTP_KEYS_PATH} (or {ATTESTATION_PATH}) again"
            )
        key_id = known[config_id][0]
        return Work(JobKind.OHTTP, body, JobMeta(key_id=key_id, version=version))

    # -- admission and the broker -----------------------------------------------------

    async def admit(self, entry: ModelEntry) -> None:
        """503 at once, naming the model and why, when no worker takes its queue (rather
        than a job that waits out its deadline). A worker seen within the last second
        counts, so a busy model costs the broker one count a second, not one a request; not
        once the model's workers failed to load it (its worker of a moment ago may have been
        retired since: a job let in on that memory would wait out its deadline)."""
        now = time.monotonic()
        if not entry.failed and now - self._seen_live.get(entry.queue, -LIVE_MEMO_S) < LIVE_MEMO_S:
            return
        if await self.broker.consumers(entry.queue):
            self._seen_live[entry.queue] = now
            return
        m = entry.manifest
        if entry.failed:
            raise Unavailable(entry.failed, retry_after=60)
        raise Unavailable(
            f"model '{m.name}' version {m.version} has no worker ready (still starting, "
            "stopped, or none is configured for it): retry later; its /ready says when",
            retry_after=5,
        )

    async def submit(self, entry: ModelEntry, work: Work) -> Outcome:
        """``work`` as one job on the model's queue; the worker's outcome."""
        await self.admit(entry)
        job = Job(
            id=uuid.uuid4().hex,
            queue=entry.queue,
            kind=work.kind,
            payload=work.payload,
            deadline=time.time() + self.timeout_s,
            meta=work.meta,
        )
        return await self.broker.submit(job)

    # -- the whole path -------------------------------------------------------------

    async def infer(
        self,
        api: str,
        model: str,
        version: str | None,
        prepare: Prepare,
        shape: Shape[T],
        defer: Defer[T] | None = None,
    ) -> T:
        """One inference request, from the model's name to the transport's answer: the
        model found, ``prepare`` (the transport's parsing, checked here), admission, the
        broker, ``shape`` (the transport's encoding of the verified outcome), counted in
        metrics under ``api``. With ``defer``, the wait for the worker runs through it (an
        async job: counted when done) and its answer is returned at once. Errors raise."""
        count = _Count(api, time.perf_counter())
        error: TrustserveError | None = None
        try:
            entry = self.model(model, version)
            count.model, count.version = entry.manifest.name, entry.manifest.version
            work = await prepare(entry)
            await self.admit(entry)  # an async job too: refused now, not later
            if defer is not None:
                later = _Count(api, count.started, count.model, count.version)
                accepted = await defer(lambda: self._complete(entry, work, shape, later))
                count.done = True  # counted by ``later``, with the worker's figures, when done
                return accepted
            return await self._complete(entry, work, shape, count)
        except TrustserveError as exc:
            error = exc
            raise
        finally:
            count.observe(self.metrics, error)

    async def _complete(self, entry: ModelEntry, work: Work, shape: Shape[T], count: _Count) -> T:
        error: TrustserveError | None = None
        try:
            count.outcome = await self.submit(entry, work)
            return shape(work, verified(work, count.outcome))
        except TrustserveError as exc:
            error = exc
            raise
        finally:
            count.observe(self.metrics, error)


def verified(work: Work, outcome: Outcome) -> Outcome:
    """``outcome`` if it can be the answer to ``work``: a sealed (or OHTTP) request gets a
    sealed answer or an error, any other request never a sealed one (the broker may have
    swapped them). An error answer is returned as it is: the transport says it its own way."""
    if work.kind.end_to_end and outcome.meta.sealed:
        return outcome
    if outcome.status != 200:
        return outcome
    if work.kind.end_to_end or outcome.meta.sealed:
        raise BrokerTampered("an answer does not match the kind of its request")
    return outcome
