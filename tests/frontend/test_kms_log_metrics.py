"""The KMS's log size and the age of its newest cosignature, as the frontend exports them
from the bundles it gets (``trustserve.frontend.log_metrics``): unit-tested with a test
log, a test witness and an injected clock, then on a real stack against the KMS's own
``/v1/log/checkpoint``."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import RunningStack
from tests.transparency.tlog_support import TestLog, new_witness, policy_entry
from trustserve.crypto import merkle
from trustserve.crypto.sealing import ATTESTATION_PATH
from trustserve.frontend.log_metrics import COSIGNED_AGE, SIZE
from trustserve.frontend.metrics import Metrics
from trustserve.transparency import note
from trustserve.transparency.note import Checkpoint

NOW = 1_800_000_000.0


def gauges(page: str) -> dict[str, float]:
    """The label-less samples of a metrics page, by name."""
    return {
        s.name: s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if not s.labels
    }


def scrape(metrics: Metrics) -> dict[str, float]:
    return gauges(generate_latest(metrics.registry).decode())


def bundle(log: TestLog, stamps: dict[Any, int]) -> dict[str, Any]:
    """A bundle whose checkpoint of ``log`` is cosigned by each witness at its stamp."""
    text = Checkpoint(log.origin, log.size, merkle.root(log.leaves())).text()
    lines = [note.sign(text, log.signer), *(note.sign(text, w, t) for w, t in stamps.items())]
    signed = note.Note(text, tuple(lines)).render()
    return {"serving_keys": {}, "transparency": {"checkpoint": signed, "entries": []}}


def test_the_age_is_from_the_newest_cosignature_at_scrape_time() -> None:
    log = TestLog()
    for n in range(3):
        log.append(policy_entry({"n": n}))
    w1, w2 = new_witness("witness.test/w1"), new_witness("witness.test/w2")
    clock = [NOW]
    metrics = Metrics(clock=lambda: clock[0])
    metrics.kms_log.seen(bundle(log, {w1: int(NOW) - 900, w2: int(NOW) - 300}))
    assert scrape(metrics)[SIZE] == 3
    assert scrape(metrics)[COSIGNED_AGE] == 300  # w2's, the newer
    clock[0] += 60  # no new bundle: the same cosignature, a minute older
    assert scrape(metrics)[COSIGNED_AGE] == 360
    log.append(policy_entry({"n": 3}))
    metrics.kms_log.seen(bundle(log, {w1: int(clock[0]) - 5}))
    assert scrape(metrics)[SIZE] == 4
    assert scrape(metrics)[COSIGNED_AGE] == 5


def test_no_cosignature_leaves_the_age_out_and_no_checkpoint_both() -> None:
    log = TestLog()
    log.append(policy_entry({"n": 0}))
    metrics = Metrics(clock=lambda: NOW)
    assert SIZE not in scrape(metrics) and COSIGNED_AGE not in scrape(metrics)  # no bundle yet
    metrics.kms_log.seen(bundle(log, {new_witness("witness.test/w1"): int(NOW) - 10}))
    metrics.kms_log.seen(bundle(log, {}))  # the KMS appended; no witness cosigned yet
    figures = scrape(metrics)
    assert figures[SIZE] == 1 and COSIGNED_AGE not in figures
    metrics.kms_log.seen({"serving_keys": {}})  # a KMS that does not log
    assert SIZE not in scrape(metrics) and COSIGNED_AGE not in scrape(metrics)


def test_a_malformed_transparency_field_is_no_figure_and_no_error() -> None:
    log = TestLog()
    log.append(policy_entry({"n": 0}))
    good = bundle(log, {})["transparency"]["checkpoint"]
    metrics = Metrics(clock=lambda: NOW)
    for field in (
        None,
        [],
        {"checkpoint": 7},
        {"checkpoint": "not a note"},
        {"checkpoint": good.replace(f"\n{log.size}\n", "\n-1\n")},  # size not a number
        {"checkpoint": good + "x" * 70_000},  # over the note size bound
    ):
        metrics.kms_log.seen({"transparency": field})
        assert SIZE not in scrape(metrics), field


def test_the_frontend_exports_the_size_of_the_kms_log(tiny_stack: RunningStack) -> None:
    """A real stack whose KMS logs: after the frontend gets a bundle, its /metrics shows the
    size the KMS's /v1/log/checkpoint shows (waited for, should the KMS append meanwhile)."""
    metrics_url = f"https://127.0.0.1:{tiny_stack.metrics_port}/metrics"
    deadline = time.monotonic() + 60
    with tiny_stack.client() as c, httpx.Client(verify=str(tiny_stack.ca), timeout=60) as h:
        while True:
            got = c.get(ATTESTATION_PATH, headers={"Cache-Control": "no-cache"})
            assert got.status_code == 200, got.text
            assert "transparency" in got.json(), "the stack's KMS does not log"
            exported = gauges(h.get(metrics_url).text)
            signed = h.get(f"{tiny_stack.kms_url}/v1/log/checkpoint").text
            size = Checkpoint.from_text(note.parse(signed).text).size
            if exported.get(SIZE) == size or time.monotonic() > deadline:
                break
    assert size > 0
    assert exported.get(SIZE) == size
    assert COSIGNED_AGE not in exported  # a development KMS has no witnesses
