"""An unexpected failure while reading an end-to-end (OHTTP) request logs only the
exception's type: its message or traceback could carry the plaintext to the host's log.
The client refuses a header length that ``isdigit`` takes and ``int`` does not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.attacks.ohttp_review_support import MANIFEST, inner, ohttp_job, reader
from trustserve.broker.base import Outcome
from trustserve.client.ohttp import header_length
from trustserve.crypto import bhttp
from trustserve.errors import BrokerTampered
from trustserve.worker import batching


def test_an_unexpected_error_logs_its_type_not_its_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "plaintext-marker-" + tmp_path.name

    def broken(*_: object) -> None:
        raise ValueError(secret)

    monkeypatch.setattr(batching, "_read", broken)
    sealed_reader, key = reader(tmp_path)
    job, context = ohttp_job(key, b"{}", {"content-type": "application/json"})
    with caplog.at_level(logging.DEBUG):
        out = batching.decode(job, MANIFEST, None, sealed_reader)
    assert "ValueError" in caplog.text and secret not in caplog.text
    assert isinstance(out, Outcome) and out.meta.sealed
    assert inner(context, out.payload).status == 500


@pytest.mark.parametrize("value", ["1\u00b2", "9" * 5000, "", "-1"])
def test_the_client_refuses_an_unconvertible_header_length(value: str) -> None:
    response = bhttp.Response(200, (("inference-header-content-length", value),), b"{}")
    with pytest.raises(BrokerTampered, match="not a number"):
        header_length(response)
