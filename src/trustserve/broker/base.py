"""The broker seam: frontends submit jobs, workers take them in batches and answer.

A broker only ever moves opaque payload bytes plus clear routing metadata (queue
name, id, kind, deadline, ``JobMeta``/``OutcomeMeta``). Two implementations:
``EmbeddedBroker`` (one machine, the default) and ``RedisStreamsBroker``
(scale-out). Both pass ``tests/broker``'s contract suite.

The contract between frontend and worker, in one place:

    kind        payload                               JobMeta          the worker answers
    v2          a v2 request, every input as binary   header_length    the v2 response the request
                data; its id, parameters and                           asked for (JSON or binary,
                requested outputs as the client sent                   the outputs it named)
    torchserve  a body as TorchServe's inference API  -                TorchServe's JSON answer
                takes it (image bytes or JSON)                         (top-k for a classifier)
    sealed      a sealed request (crypto/sealing.py)  key_id, version  a sealed answer
                holding a v2 or a torchserve body
    ohttp       an encapsulated request (RFC 9458,    key_id, version  an encapsulated response
                crypto/ohttp.py) holding a Binary                      (BHTTP) with the status
                HTTP request for the inference URL                     and body inside

The worker encodes each answer once; the frontend forwards it as it is. An
error answer's payload is its UTF-8 message and ``OutcomeMeta.code`` its
machine code (``trustserve.errors``). In standard mode ``broker/encrypted.py``
puts the payload, the status and the ``OutcomeMeta`` inside the broker-key AEAD.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol

from trustserve.archive import MAX_BATCH_SIZE
from trustserve.errors import WorkersFailed


def queue_name(model: str, version: str) -> str:
    return f"{model}:{version}"


class JobKind(StrEnum):
    """How a worker must read a job's payload (see the table above)."""

    V2 = "v2"
    TORCHSERVE = "torchserve"
    SEALED = "sealed"
    OHTTP = "ohttp"

    @property
    def end_to_end(self) -> bool:
        """Sealed to the worker by the client: only the worker opens it, its answer too."""
        return self in (JobKind.SEALED, JobKind.OHTTP)


def _field(raw: dict[str, Any], name: str, *types: type) -> Any:
    """``raw[name]`` if absent/None or of exactly one of ``types`` (so a bool is no int)."""
    value = raw.get(name)
    if value is not None and type(value) not in types:
        raise ValueError(f"metadata field {name!r} has the wrong type")
    return value


@dataclass(frozen=True)
class JobMeta:
    """Clear facts a worker needs to read a job's payload; none of them secret.

    ``header_length``: a v2 body's JSON header length (None: the body is all JSON).
    ``key_id`` / ``version``: the serving key id and model version a sealed request
    names (``""`` version: the model's default); both are bound into the sealing.
    """

    header_length: int | None = None
    key_id: str = ""
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}

    @classmethod
    def from_json(cls, raw: Any) -> JobMeta:
        """Strict: the broker is not trusted to hand back what it was given."""
        if not isinstance(raw, dict) or set(raw) - {"header_length", "key_id", "version"}:
            raise ValueError("job metadata is malformed")
        return cls(
            _int(raw, "header_length", 0, MAX_HEADER_LENGTH),
            _field(raw, "key_id", str) or "",
            _field(raw, "version", str) or "",
        )


@dataclass(frozen=True)
class OutcomeMeta:
    """Clear facts about an answer that the frontend acts on; none of them secret.

    ``code``: an error's machine code (None on success). ``header_length``: a v2
    binary answer's JSON header length (None: all JSON). ``sealed``: the payload is
    a sealed answer only the client can open. The rest is the worker's figures for
    metrics (docs/observability.md): its queue wait and preprocessing time; the
    engine time and rows of the batch it ran in (``batch_first`` on one answer per
    batch, so each batch is counted once), and whether that batch ran on the wide
    session, every core of the host (``wide``, worker/cores.py); ``key_refreshes``,
    the worker's serving-key refreshes by result (``KEY_REFRESH_RESULTS``) since its
    previous answer.

    ``from_json`` bounds every number (in plaintext mode the broker can write them):
    ``batch_size`` 1..``MAX_BATCH_SIZE``, ``header_length`` within a frame, durations
    finite and not negative (clipped at ``MAX_FIGURE_MS``), refresh counts below 2**31.
    """

    code: str | None = None
    header_length: int | None = None
    sealed: bool = False
    inference_ms: float | None = None
    queue_ms: float | None = None
    batch_size: int | None = None
    preprocess_ms: float | None = None
    batch_first: bool = False
    key_refreshes: dict[str, int] | None = None
    wide: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @classmethod
    def from_json(cls, raw: Any) -> OutcomeMeta:
        if not isinstance(raw, dict) or set(raw) - _OUTCOME_FIELDS:
            raise ValueError("outcome metadata is malformed")
        return cls(
            _field(raw, "code", str),
            _int(raw, "header_length", 0, MAX_HEADER_LENGTH),
            bool(_field(raw, "sealed", bool)),
            _ms(raw, "inference_ms"),
            _ms(raw, "queue_ms"),
            _int(raw, "batch_size", 1, MAX_BATCH_SIZE),
            _ms(raw, "preprocess_ms"),
            bool(_field(raw, "batch_first", bool)),
            _refreshes(_field(raw, "key_refreshes", dict)),
            bool(_field(raw, "wide", bool)),
        )


KEY_REFRESH_RESULTS = ("ok", "failed", "refused")
MAX_FIGURE_MS = 86_400_000.0  # a day: longer durations are counted as a day
MAX_HEADER_LENGTH = 1 << 31  # a frame's payload limit (broker.wire.MAX_PAYLOAD)
_OUTCOME_FIELDS = {f.name for f in fields(OutcomeMeta)}


def _int(raw: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = _field(raw, name, int)
    if value is not None and not low <= value <= high:
        raise ValueError(f"metadata field {name!r} is outside {low}..{high}")
    return value  # type: ignore[no-any-return]


def _ms(raw: dict[str, Any], name: str) -> float | None:
    value = _field(raw, name, int, float)
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"metadata field {name!r} is negative or not finite")
    return min(float(value), MAX_FIGURE_MS)


def _refreshes(raw: dict[str, Any] | None) -> dict[str, int] | None:
    """Counts by result: only the known results, each a count, so no label can be invented."""
    if raw is None:
        return None
    if set(raw) - set(KEY_REFRESH_RESULTS) or any(
        type(n) is not int or not 0 <= n < 1 << 31 for n in raw.values()
    ):
        raise ValueError("metadata field 'key_refreshes' is malformed")
    return dict(raw)


@dataclass(frozen=True)
class Job:
    """One request on its way to a worker.

    ``kind`` says how the worker must read ``payload``; ``deadline`` is a unix time
    after which nobody waits for it. ``enqueued_at`` and ``deliveries`` are the
    broker's own bookkeeping.
    """

    id: str
    queue: str
    kind: JobKind
    payload: bytes
    deadline: float
    meta: JobMeta = field(default_factory=JobMeta)
    enqueued_at: float = 0.0
    deliveries: int = 0


@dataclass(frozen=True)
class Outcome:
    """A worker's answer to one job: an HTTP status, the response body bytes, clear facts."""

    id: str
    status: int
    payload: bytes
    meta: OutcomeMeta = field(default_factory=OutcomeMeta)

    @property
    def by_broker(self) -> bool:
        """The broker's own failure notice (``broker_failure``), not a worker's answer."""
        return self.meta.code == WorkersFailed.code


class Broker(Protocol):
    """Frontend side."""

    async def submit(self, job: Job) -> Outcome:
        """Queue ``job`` and wait for its outcome.

        Raises ``Unavailable`` when the queue is full or the broker is down (nothing
        was accepted) and ``DeadlineExceeded`` when the deadline passes first.
        """
        ...

    async def depth(self, queue: str) -> int: ...

    async def consumers(self, queue: str) -> int:
        """How many workers are taking from ``queue`` (a model is ready when > 0)."""
        ...

    async def close(self) -> None: ...


class JobSource(Protocol):
    """Worker side."""

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        """Up to ``max_items`` jobs: returns when that many are queued or the oldest
        has waited ``max_delay_s`` (0: at once, with what is queued, as soon as one job
        is); an empty list after an idle poll interval."""
        ...

    async def answer(self, job: Job, outcome: Outcome) -> None: ...

    async def close(self) -> None: ...


WORKERS_FAILED = "request failed on every worker that took it"


def broker_failure(job_id: str, message: str = WORKERS_FAILED) -> Outcome:
    """The answer the broker itself gives when no worker could: clear text, an error status,
    code ``broker_failure``. Never authenticated: ``EncryptingBroker`` passes on only the
    fixed notice, so all it can say is "failed"."""
    code = WorkersFailed.code
    return Outcome(job_id, WorkersFailed.status, message.encode(), OutcomeMeta(code))
