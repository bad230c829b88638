"""The frontend counts an OHTTP answer a worker opened as 200 with no error code, even
one from a worker that still sends the inner status and code in the clear: what happened
inside an encapsulated request is its client's to know (docs/ohttp.md, Statuses)."""

from __future__ import annotations

from tests.frontend.test_metrics import samples, value
from trustserve.broker.base import Outcome, OutcomeMeta
from trustserve.errors import BadRequest
from trustserve.frontend.dataplane import _Count
from trustserve.frontend.metrics import Metrics


def count(metrics: Metrics, api: str, outcome: Outcome | None, error: BadRequest | None) -> None:
    c = _Count(api, 0.0, "tiny", "1")
    c.outcome = outcome
    c.observe(metrics, error)


def test_an_opened_ohttp_request_counts_as_200_whatever_its_worker_said() -> None:
    metrics = Metrics()
    leaky = Outcome("j1", 409, b"sealed", OutcomeMeta("replayed", sealed=True))
    count(metrics, "ohttp", leaky, None)
    count(metrics, "ohttp", Outcome("j2", 200, b"sealed", OutcomeMeta(sealed=True)), None)
    assert value(metrics, "trustserve_requests_total", api="ohttp", status="200") == 2
    assert not [k for k in samples(metrics) if k[0] == "trustserve_errors_total"]


def test_a_refusal_before_any_worker_opened_it_keeps_its_status() -> None:
    metrics = Metrics()
    count(metrics, "ohttp", None, BadRequest("unknown OHTTP key config id"))
    clear = Outcome("j3", 400, b"cannot open", OutcomeMeta("cannot_open_sealed"))
    count(metrics, "ohttp", clear, None)
    assert value(metrics, "trustserve_requests_total", api="ohttp", status="400") == 2
    assert value(metrics, "trustserve_errors_total", code="cannot_open_sealed") == 1
