"""Framing for jobs and outcomes on a byte stream: lengths, a JSON head, raw payload.

Reading is strict: a head that does not describe a job or an outcome (a missing
field, a wrong type, an unknown kind) raises ValueError.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from trustserve.archive import MAX_BATCH_SIZE
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome, OutcomeMeta

_HEAD = struct.Struct(">II")
MAX_META = 1 << 20
MAX_PAYLOAD = 1 << 31


def frame(meta: dict[str, Any], payload: bytes = b"") -> bytes:
    return frame_head(meta, len(payload)) + payload


def frame_head(meta: dict[str, Any], payload_len: int) -> bytes:
    """A frame without its payload: to write the payload after it without joining them."""
    head = orjson.dumps(meta)
    return _HEAD.pack(len(head), payload_len) + head


def _head(meta_len: int, payload_len: int) -> None:
    if meta_len > MAX_META or payload_len > MAX_PAYLOAD:
        raise ValueError("frame too large")


def _object(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("frame head is not JSON") from None
    if not isinstance(meta, dict):
        raise ValueError("frame head must be a JSON object")
    return meta


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    meta_len, payload_len = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    _head(meta_len, payload_len)
    meta = _object(await reader.readexactly(meta_len))
    payload = await reader.readexactly(payload_len) if payload_len else b""
    return meta, payload


def unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``frame`` undone, for a frame held whole in memory."""
    if len(data) < _HEAD.size:
        raise ValueError("frame too short")
    meta_len, payload_len = _HEAD.unpack_from(data)
    _head(meta_len, payload_len)
    if len(data) != _HEAD.size + meta_len + payload_len:
        raise ValueError("frame length does not match its head")
    view = memoryview(data)
    return _object(view[_HEAD.size : _HEAD.size + meta_len]), data[_HEAD.size + meta_len :]


def job_meta(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "queue": job.queue,
        "kind": job.kind.value,
        "deadline": job.deadline,
        "meta": job.meta.to_json(),
        "enqueued_at": job.enqueued_at,
        "deliveries": job.deliveries,
    }


def job_from(meta: dict[str, Any], payload: bytes) -> Job:
    try:
        return Job(
            id=str(meta["id"]),
            queue=str(meta["queue"]),
            kind=JobKind(meta["kind"]),
            payload=payload,
            deadline=float(meta["deadline"]),
            meta=JobMeta.from_json(meta.get("meta", {})),
            enqueued_at=float(meta.get("enqueued_at", 0.0)),
            deliveries=int(meta.get("deliveries", 0)),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a job: {exc!r}") from None


def outcome_meta(outcome: Outcome) -> dict[str, Any]:
    return {"id": outcome.id, "status": outcome.status, "meta": outcome.meta.to_json()}


def outcome_from(meta: dict[str, Any], payload: bytes) -> Outcome:
    try:
        meta_json = meta.get("meta", {})
        return Outcome(
            str(meta["id"]), int(meta["status"]), payload, OutcomeMeta.from_json(meta_json)
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an outcome: {exc!r}") from None


MAX_TAKE_DELAY_S = 3600.0


def take_bounds(meta: dict[str, object]) -> tuple[int, float]:
    """A take's batch size and delay, as a worker sends them (an int 1..MAX_BATCH_SIZE, a
    finite delay of 0..an hour); ValueError otherwise: a NaN delay would be a timer that
    fires at once in the frontend's event loop, again and again."""
    max_items, delay = meta.get("max"), meta.get("delay")
    if type(max_items) is not int or not 1 <= max_items <= MAX_BATCH_SIZE:
        raise ValueError("a take's max is not a batch size")
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise ValueError("a take's delay is not a number")
    if not 0 <= delay <= MAX_TAKE_DELAY_S:  # NaN compares False
        raise ValueError("a take's delay is not a finite number of seconds")
    return max_items, float(delay)
