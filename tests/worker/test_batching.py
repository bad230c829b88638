"""Batching and answers in the worker: plan/concat/split, reading jobs, encoding answers once."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import orjson
import pytest

from tests.support import tiny_manifest
from trustserve.archive import Manifest
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome
from trustserve.crypto.keys import ServingKey, ServingKeySet
from trustserve.crypto.sealing import Route, open_response, seal_request
from trustserve.tensors import Tensor, encode_binary, parse_response
from trustserve.worker.batching import (
    Decoded,
    Reply,
    concat,
    decode,
    encode_answer,
    plan,
    split,
    torchserve_answer,
)
from trustserve.worker.keys import KeyRing
from trustserve.worker.replay import ReplayGuard, SqliteNonceStore
from trustserve.worker.sealed import SealedReader

MANIFEST = tiny_manifest()


def job(kind: JobKind, payload: bytes, meta: JobMeta | None = None) -> Job:
    return Job(uuid.uuid4().hex, "tiny:1", kind, payload, time.time() + 30, meta or JobMeta())


def v2_job(head: dict[str, Any], x: np.ndarray) -> Job:
    body, head_len = encode_binary(head, "inputs", [Tensor("x", "FP32", tuple(x.shape), x)])
    return job(JobKind.V2, body, JobMeta(header_length=head_len))


def decoded(rows: int, fill: float = 0) -> Decoded:
    x = np.full((rows, 4), fill, np.float32)
    return Decoded(job(JobKind.V2, b""), {"x": x}, rows, Reply(JobKind.V2))


def test_plan_groups_jobs_in_arrival_order_up_to_the_row_limit() -> None:
    jobs = [decoded(n) for n in (3, 4, 2, 8, 1)]
    runs = plan(jobs, 8)
    assert [[d.rows for d in run] for run in runs] == [[3, 4], [2], [8], [1]]
    assert [d for run in runs for d in run] == jobs
    assert plan([], 8) == []


def test_concat_then_split_gives_each_job_its_own_rows() -> None:
    run = [decoded(2, 1.0), decoded(1, 2.0), decoded(3, 3.0)]
    batch = concat(run)
    assert batch["x"].shape == (6, 4)
    parts = split(run, {"y": batch["x"] * 10})
    assert [p["y"].shape[0] for p in parts] == [2, 1, 3]
    assert [float(p["y"][0, 0]) for p in parts] == [10.0, 20.0, 30.0]
    single = [decoded(2)]
    assert concat(single) is single[0].inputs


def test_a_v2_job_keeps_what_its_request_asked_for() -> None:
    head = {
        "id": "req-7",
        "outputs": [{"name": "s", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False},
    }
    d = decode(v2_job(head, np.ones((2, 4), np.float32)), MANIFEST, None)
    assert isinstance(d, Decoded) and d.rows == 2
    assert d.reply.kind is JobKind.V2 and d.reply.request_id == "req-7"
    assert [(o.name, o.binary) for o in d.reply.outputs or []] == [("s", True)]


def test_a_json_v2_body_is_read_as_the_client_sent_it() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    )
    d = decode(job(JobKind.V2, body), MANIFEST, None)
    assert isinstance(d, Decoded)
    np.testing.assert_array_equal(d.inputs["x"], [[1, 2, 3, 4]])


def answer(d: Decoded, outputs: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[Tensor]]:
    body, meta = encode_answer(d, MANIFEST, outputs)
    return parse_response(body, meta.header_length)


OUTPUTS = {"y": np.full((1, 4), 3, np.float32), "s": np.array([[4.0]], np.float32)}


def test_the_answer_is_encoded_once_in_the_format_asked_for() -> None:
    head = {
        "id": "r1",
        "outputs": [{"name": "s"}, {"name": "y", "parameters": {"binary_data": True}}],
    }
    d = decode(v2_job(head, np.ones((1, 4), np.float32)), MANIFEST, None)
    assert isinstance(d, Decoded)
    header, tensors = answer(d, OUTPUTS)
    assert (
        header["id"] == "r1" and header["model_name"] == "tiny" and header["model_version"] == "1"
    )
    assert [t.name for t in tensors] == ["s", "y"]
    assert header["outputs"][0]["data"] == [4.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 16}


@pytest.mark.parametrize("binary", [True, False])
def test_without_named_outputs_every_output_follows_binary_data_output(binary: bool) -> None:
    head = {"parameters": {"binary_data_output": binary}}
    d = decode(v2_job(head, np.ones((1, 4), np.float32)), MANIFEST, None)
    assert isinstance(d, Decoded)
    body, meta = encode_answer(d, MANIFEST, OUTPUTS)
    assert (meta.header_length is not None) == binary
    header, tensors = parse_response(body, meta.header_length)
    assert "id" not in header and [t.name for t in tensors] == ["y", "s"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "request body is empty"),
        (b"{oops", "body is not JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", "model 'tiny' takes no images (no image preprocessing)"),
        (b"\xff\xd8\xff\xe0\x80", "takes no images"),  # not "str is not valid UTF-8"
        (b'{"data": [1, 2, 3]}', "each instance needs 4"),
        (b'{"data": ["a", "b", "c", "d"]}', "must be numbers for FP32"),
        (b'{"other": 1}', "JSON body has no input data"),
    ],
)
def test_an_unreadable_torchserve_job_is_answered_400(payload: bytes, words: str) -> None:
    out = decode(job(JobKind.TORCHSERVE, payload), MANIFEST, None)
    assert isinstance(out, Outcome) and out.status == 400
    assert out.meta.code == "invalid_input" and words in out.payload.decode()


@pytest.mark.parametrize(
    "payload", [b"[[1, 2, 3, 4], [5, 6, 7, 8]]", b'{"data": [1, 2, 3, 4, 5, 6, 7, 8]}']
)
def test_torchserve_json_is_read_as_instances(payload: bytes) -> None:
    d = decode(job(JobKind.TORCHSERVE, payload), MANIFEST, None)
    assert isinstance(d, Decoded) and d.rows == 2 and d.reply.kind is JobKind.TORCHSERVE


def test_a_bad_v2_job_is_answered_with_its_error_and_code() -> None:
    out = decode(v2_job({}, np.ones((1, 3), np.float32)), MANIFEST, None)
    assert isinstance(out, Outcome) and (out.status, out.meta.code) == (400, "invalid_input")
    assert "does not match model shape" in out.payload.decode()


def test_a_sealed_job_on_a_worker_without_serving_keys_is_a_stale_key() -> None:
    """The client retries on this code with a fresh attestation bundle."""
    out = decode(job(JobKind.SEALED, b"sealed"), MANIFEST, None)
    assert isinstance(out, Outcome) and out.status == 400
    assert out.meta.code == "stale_serving_key" and not out.meta.sealed


def labelled(**extra: Any) -> Manifest:
    raw = tiny_manifest().to_json()
    raw["outputs"] = [{"name": "logits", "datatype": "FP32", "shape": [-1, 6]}]
    return Manifest.from_json({**raw, "labels": list("abcdef"), "extra": extra})


def test_the_torchserve_answer_is_the_top_5_labels_by_softmax() -> None:
    logits = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]], np.float32)
    first, second = torchserve_answer(labelled(), {"logits": logits})
    assert list(first) == ["f", "e", "d", "c", "b"] and list(second) == ["a", "b", "c", "d", "e"]
    expected = np.exp(5) / np.exp(np.arange(6)).sum()
    assert first["f"] == pytest.approx(expected, abs=1e-6)


def test_probabilities_are_not_softmaxed_again_and_one_row_is_one_object() -> None:
    probs = np.array([[0.1, 0.5, 0.05, 0.05, 0.2, 0.1]], np.float32)
    top = torchserve_answer(labelled(outputs_are_probabilities=True), {"logits": probs})
    assert top == {"b": 0.5, "e": 0.2, "a": 0.1, "f": 0.1, "c": 0.05}


def test_without_labels_the_torchserve_answer_is_every_output_by_row() -> None:
    rows = torchserve_answer(MANIFEST, {"y": np.ones((2, 4), np.float32), "s": np.ones((2, 1))})
    assert rows == [{"y": [1, 1, 1, 1], "s": [1.0]}] * 2


@pytest.fixture
def sealed_reader(tmp_path: Any) -> tuple[SealedReader, ServingKey]:
    key = ServingKey.generate(time.time() + 600)
    ring = KeyRing(None, None)
    ring.serving = ServingKeySet((key,))
    guard = ReplayGuard(SqliteNonceStore(tmp_path / "nonces.db"), 300)
    return SealedReader(ring, guard, MANIFEST), key


def test_a_sealed_job_is_answered_sealed_status_inside(
    sealed_reader: tuple[SealedReader, ServingKey],
) -> None:
    reader, key = sealed_reader
    route = Route("tiny", "1", key.key_id)
    x = np.ones((1, 4), np.float32)
    body, hlen = encode_binary({}, "inputs", [Tensor("x", "FP32", (1, 4), x)])
    sealed, reply = seal_request(key.public_key, route, body, hlen)
    d = decode(
        job(JobKind.SEALED, sealed, JobMeta(key_id=key.key_id, version="1")), MANIFEST, None, reader
    )
    assert isinstance(d, Decoded) and d.reply.sealed is not None
    payload, meta = encode_answer(d, MANIFEST, OUTPUTS)
    assert meta.sealed and meta.header_length is None  # the frontend learns nothing from it
    opened = open_response(reply, route, payload)
    assert opened.status == 200 and opened.code is None
    _, tensors = parse_response(opened.body, opened.header_length)
    assert [t.name for t in tensors] == ["y", "s"]


def test_a_sealed_request_with_bad_inputs_gets_a_sealed_error(
    sealed_reader: tuple[SealedReader, ServingKey],
) -> None:
    reader, key = sealed_reader
    route = Route("tiny", "1", key.key_id)
    body = b"not a v2 body"
    sealed, reply = seal_request(key.public_key, route, body, None, kind="torchserve")
    out = decode(
        job(JobKind.SEALED, sealed, JobMeta(key_id=key.key_id, version="1")), MANIFEST, None, reader
    )
    assert isinstance(out, Outcome) and out.status == 400 and out.meta.sealed
    assert b"JSON" not in out.payload  # the message is for the client only
    opened = open_response(reply, route, out.payload)
    assert (opened.status, opened.code) == (400, "invalid_input")
    assert b"body is not JSON" in opened.body and b"takes no images" in opened.body


def test_a_torchserve_job_with_more_rows_than_the_model_batches_is_answered_400() -> None:
    """The v2 rule for TorchServe JSON too: an engine run never has more than
    ``max_batch_size`` rows, so the batch size a worker reports stays within it."""
    rows = [[1.0, 2.0, 3.0, 4.0]] * (MANIFEST.max_batch_size + 1)
    out = decode(job(JobKind.TORCHSERVE, orjson.dumps({"data": rows})), MANIFEST, None)
    assert isinstance(out, Outcome) and out.status == 400
    assert f"outside 1..{MANIFEST.max_batch_size}" in out.payload.decode()
    full = decode(job(JobKind.TORCHSERVE, orjson.dumps(rows[1:])), MANIFEST, None)
    assert isinstance(full, Decoded) and full.rows == MANIFEST.max_batch_size


def test_a_v2_bytes_job_is_decoded_in_the_worker_as_a_torchserve_image_is() -> None:
    from functools import partial

    from trustserve.imaging import preprocess_image
    from trustserve.models.calibration import synthetic_image

    manifest = tiny_manifest(
        inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}],
        preprocessing={"resize": 20, "crop": 16},
    )
    assert manifest.preprocessing is not None
    pre = partial(preprocess_image, pre=manifest.preprocessing)
    jpegs = np.empty(2, dtype=object)
    jpegs[:] = [synthetic_image(7), synthetic_image(8)]
    body, head_len = encode_binary({}, "inputs", [Tensor("input", "BYTES", (2,), jpegs)])
    got = decode(job(JobKind.V2, body, JobMeta(header_length=head_len)), manifest, pre)
    assert isinstance(got, Decoded) and got.rows == 2
    alone = decode(job(JobKind.TORCHSERVE, jpegs[1]), manifest, pre)
    assert isinstance(alone, Decoded)
    assert got.inputs["input"].shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(got.inputs["input"][1:], alone.inputs["input"])
