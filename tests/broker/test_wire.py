"""The wire format of jobs and outcomes: typed fields round trip, anything else is refused."""

from __future__ import annotations

from typing import Any

import pytest

from trustserve.broker.base import Job, JobKind, JobMeta, Outcome, OutcomeMeta
from trustserve.broker.wire import (
    frame,
    job_from,
    job_meta,
    outcome_from,
    outcome_meta,
    unframe,
)


def test_a_job_round_trips_with_its_typed_fields() -> None:
    job = Job("j", "m:1", JobKind.SEALED, b"p", 12.5, JobMeta(None, "srv-1", "2"), 3.0, 2)
    head, payload = unframe(frame(job_meta(job), job.payload))
    assert job_from(head, payload) == job


def test_an_outcome_round_trips_with_its_typed_fields() -> None:
    meta = OutcomeMeta("invalid_input", 40, True, 1.5, 2.0, 4)
    outcome = Outcome("j", 400, b"\x00msg", meta)
    head, payload = unframe(frame(outcome_meta(outcome), outcome.payload))
    assert outcome_from(head, payload) == outcome


def test_empty_metadata_stays_off_the_wire() -> None:
    assert JobMeta().to_json() == {} and OutcomeMeta().to_json() == {}


JOB = {"id": "j", "queue": "m:1", "kind": "v2", "deadline": 1.0}


@pytest.mark.parametrize(
    "head",
    [
        {k: v for k, v in JOB.items() if k != "kind"},
        {**JOB, "kind": "raw"},
        {**JOB, "meta": {"header_length": "10"}},
        {**JOB, "meta": {"header_length": True}},
        {**JOB, "meta": {"key_id": 7}},
        {**JOB, "meta": {"content_type": "application/json"}},
        {**JOB, "meta": []},
    ],
)
def test_a_malformed_job_is_refused(head: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        job_from(head, b"")


@pytest.mark.parametrize(
    "head",
    [
        {"id": "j"},
        {"id": "j", "status": 200, "meta": {"header_length": 1.5}},
        {"id": "j", "status": 200, "meta": {"sealed": "yes"}},
        {"id": "j", "status": 200, "meta": {"inference_ms": "1"}},
        {"id": "j", "status": 200, "meta": {"broker": True}},
    ],
)
def test_a_malformed_outcome_is_refused(head: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        outcome_from(head, b"")


@pytest.mark.parametrize("cut", [0, 3, 9, -1])
def test_a_cut_or_padded_frame_is_refused(cut: int) -> None:
    whole = frame({"a": 1}, b"payload")
    with pytest.raises(ValueError):
        unframe(whole[:cut] if cut else whole + b"x")
