"""Review (issue 25): a sealed v2 BYTES request is checked against the model from its header
before its elements are read.

The frontend cannot look inside a sealed request, so the worker is the first to parse it.
It used to parse every BYTES element first (shape checked only afterwards): a client
could send a body of ``shape [N]`` with N one-byte elements, and the worker built N
``bytes`` objects and an N-element object array (about ten times the body in memory, a
Python loop per element on the engine thread) before refusing a batch over the model's
limit. Now the header's shape is checked first, and at most ``max_batch_size`` elements
are ever read.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import trustserve.tensors as tensors
from tests.support import tiny_manifest
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome
from trustserve.crypto.keys import ServingKey, ServingKeySet
from trustserve.crypto.sealing import Route, open_response, seal_request
from trustserve.tensors import Tensor, encode_binary
from trustserve.worker.batching import Decoded, decode
from trustserve.worker.keys import KeyRing
from trustserve.worker.replay import ReplayGuard, SqliteNonceStore
from trustserve.worker.sealed import SealedReader

IMAGE_MODEL = tiny_manifest(
    inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}],
    preprocessing={"resize": 20, "crop": 16},
)
ELEMENTS = 50_000


@pytest.fixture
def read_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many elements each BYTES tensor the parser reads claims."""
    counts: list[int] = []
    real = tensors.bytes_elements

    def spy(data: memoryview, shape: tuple[int, ...], where: str) -> Any:
        counts.append(int(np.prod(shape)))
        return real(data, shape, where)

    monkeypatch.setattr(tensors, "bytes_elements", spy)
    return counts


def tiny_elements(n: int) -> tuple[bytes, int]:
    items = np.empty(n, dtype=object)
    items[:] = [b"x"] * n
    return encode_binary({}, "inputs", [Tensor("input", "BYTES", (n,), items)])


def job(kind: JobKind, payload: Any, meta: JobMeta) -> Job:
    return Job("j", "tiny:1", kind, payload, time.time() + 30, meta)


def test_a_sealed_bytes_request_over_the_batch_limit_is_refused_before_its_elements_are_read(
    tmp_path: Any, read_counts: list[int]
) -> None:
    key = ServingKey.generate(time.time() + 600)
    ring = KeyRing(None, None)
    ring.serving = ServingKeySet((key,))
    reader = SealedReader(ring, ReplayGuard(SqliteNonceStore(tmp_path / "n.db"), 300), IMAGE_MODEL)
    route = Route("tiny", "1", key.key_id)
    body, head_len = tiny_elements(ELEMENTS)
    sealed, reply = seal_request(key.public_key, route, body, head_len)
    out = decode(
        job(JobKind.SEALED, sealed, JobMeta(key_id=key.key_id, version="1")),
        IMAGE_MODEL,
        lambda _: np.zeros((3, 16, 16), np.float32),
        reader,
    )
    assert isinstance(out, Outcome) and out.meta.sealed
    opened = open_response(reply, route, out.payload)
    assert (opened.status, opened.code) == (400, "invalid_input")
    assert f"batch size {ELEMENTS} is outside" in opened.body.decode()
    assert all(n <= IMAGE_MODEL.max_batch_size for n in read_counts), read_counts


@pytest.mark.parametrize("in_place", [False, True])
def test_a_v2_body_in_shared_memory_is_checked_as_one_in_bytes(
    in_place: bool, read_counts: list[int]
) -> None:
    """The early check reads a zero-copy view too (local jobs in clear)."""
    body, head_len = tiny_elements(ELEMENTS)
    payload = memoryview(body) if in_place else body
    out = decode(job(JobKind.V2, payload, JobMeta(header_length=head_len)), IMAGE_MODEL, None)
    assert isinstance(out, Outcome) and out.status == 400
    assert f"batch size {ELEMENTS} is outside" in out.payload.decode()
    assert read_counts == []
    json_body = b'{"inputs": [' + b"1," * 200_000 + b"1]}"  # over the model's JSON value budget
    view = memoryview(json_body) if in_place else json_body
    out = decode(job(JobKind.V2, view, JobMeta()), IMAGE_MODEL, None)
    assert isinstance(out, Outcome) and out.status == 400, out


def test_a_good_bytes_request_still_decodes(read_counts: list[int]) -> None:
    body, head_len = tiny_elements(2)
    got = decode(
        job(JobKind.V2, memoryview(body), JobMeta(header_length=head_len)),
        IMAGE_MODEL,
        lambda _: np.zeros((3, 16, 16), np.float32),
    )
    assert isinstance(got, Decoded) and got.rows == 2 and read_counts == [2]
