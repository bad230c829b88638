"""OHTTP review: an inner ``inference-header-content-length`` that ``str.isdigit`` accepts
but ``int`` does not (a latin-1 superscript digit, or more digits than Python converts)
escapes the worker's checks: ``read_ohttp`` calls ``int`` outside its ``RefusedInside``
block, so the ``ValueError`` reaches ``decode``'s catch-all. The client then gets a 500
in the clear (not encapsulated: the frontend reads it), and ``log.exception`` writes the
traceback, with the plaintext header value in it, to the worker's log on the untrusted
host. It should be an encapsulated 400 that logs nothing of the request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.attacks.ohttp_review_support import MANIFEST, inner, ohttp_job, reader
from trustserve.broker.base import Outcome
from trustserve.worker.batching import decode


@pytest.mark.parametrize("value", ["1\u00b2", "9" * 5000], ids=["superscript", "5000-digits"])
def test_an_unconvertible_header_length_is_an_encapsulated_400(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    sealed_reader, key = reader(tmp_path)
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": value}
    job, context = ohttp_job(key, b"\x00" * 16, headers)
    with caplog.at_level(logging.DEBUG):
        out = decode(job, MANIFEST, None, sealed_reader)
    assert value[:20] not in caplog.text  # nothing of the plaintext in the host's log
    assert isinstance(out, Outcome)
    assert out.meta.sealed, (out.status, out.payload[:200])  # not a clear answer
    assert inner(context, out.payload).status == 400
