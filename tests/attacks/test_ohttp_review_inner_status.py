"""OHTTP review: the frontend (and the broker) learn the inner status and error code of an
encapsulated request, though docs/ohttp.md says they "can neither read nor change it".

Once the worker decapsulated an OHTTP request, its error answer (wrong model, bad inputs,
replayed, expired, ...) is encapsulated to the client, but ``error_outcome`` still puts the
inner status and machine code beside it in the clear ``Outcome`` (the broker keeps a clear
copy of the status; the frontend reads both and counts them in its metrics under
``api="ohttp"``). The frontend then knows, per request it relayed, that it was replayed
(409 ``replayed``), for another model (``wrong_model_version``), had bad inputs
(``invalid_input``), ... RFC 9458's gateway answers 200 whatever happened inside, and so
should what the worker hands to the untrusted side: status 200, no code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.ohttp_review_support import MANIFEST, inner, ohttp_job, reader
from trustserve.broker.base import Outcome
from trustserve.worker.batching import decode


@pytest.mark.parametrize(
    ("path", "body", "inner_status"),
    [
        ("/v2/models/tiny/versions/1/infer", b"not a v2 body", 400),  # invalid_input
        ("/v2/models/colour/versions/1/infer", b"{}", 400),  # wrong_model_version
        ("/v2/models/tiny/versions/1/ready", b"{}", 404),
    ],
    ids=["invalid-input", "other-model", "other-path"],
)
def test_the_untrusted_side_sees_no_inner_status(
    tmp_path: Path, path: str, body: bytes, inner_status: int
) -> None:
    sealed_reader, key = reader(tmp_path)
    job, context = ohttp_job(key, body, {"content-type": "application/json"}, path)
    out = decode(job, MANIFEST, None, sealed_reader)
    assert isinstance(out, Outcome) and out.meta.sealed
    assert inner(context, out.payload).status == inner_status  # the client's to read
    # what leaves the TEE in the clear (to the broker and the frontend)
    assert (out.status, out.meta.code) == (200, None), (out.status, out.meta.code)


def test_a_replay_is_not_announced_to_the_frontend(tmp_path: Path) -> None:
    sealed_reader, key = reader(tmp_path)
    job, context = ohttp_job(key, b"not a v2 body", {"content-type": "application/json"})
    decode(job, MANIFEST, None, sealed_reader)
    again = decode(job, MANIFEST, None, sealed_reader)  # the frontend replays the captured job
    assert isinstance(again, Outcome) and again.meta.sealed
    assert inner(context, again.payload).status == 409
    assert (again.status, again.meta.code) == (200, None), (again.status, again.meta.code)
