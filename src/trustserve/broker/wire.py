"""Framing for jobs and outcomes on a byte stream: lengths, a JSON head, raw payload."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from trustserve.broker.base import Job, Outcome

_HEAD = struct.Struct(">II")
MAX_META = 1 << 20
MAX_PAYLOAD = 1 << 31


def frame(meta: dict[str, Any], payload: bytes = b"") -> bytes:
    head = orjson.dumps(meta)
    return _HEAD.pack(len(head), len(payload)) + head + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    meta_len, payload_len = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    if meta_len > MAX_META or payload_len > MAX_PAYLOAD:
        raise ValueError("frame too large")
    meta = orjson.loads(await reader.readexactly(meta_len))
    payload = await reader.readexactly(payload_len) if payload_len else b""
    if not isinstance(meta, dict):
        raise ValueError("frame head must be a JSON object")
    return meta, payload


def job_meta(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "queue": job.queue,
        "kind": job.kind,
        "deadline": job.deadline,
        "meta": job.meta,
        "enqueued_at": job.enqueued_at,
        "deliveries": job.deliveries,
    }


def job_from(meta: dict[str, Any], payload: bytes) -> Job:
    return Job(
        id=str(meta["id"]),
        queue=str(meta["queue"]),
        kind=str(meta["kind"]),
        payload=payload,
        deadline=float(meta["deadline"]),
        meta=dict(meta.get("meta") or {}),
        enqueued_at=float(meta.get("enqueued_at", 0.0)),
        deliveries=int(meta.get("deliveries", 0)),
    )


def outcome_meta(outcome: Outcome) -> dict[str, Any]:
    return {"id": outcome.id, "status": outcome.status, "meta": outcome.meta}


def outcome_from(meta: dict[str, Any], payload: bytes) -> Outcome:
    return Outcome(str(meta["id"]), int(meta["status"]), payload, dict(meta.get("meta") or {}))
