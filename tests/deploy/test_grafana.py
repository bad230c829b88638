"""deploy/grafana/trustserve.json: every query parses as PromQL and names only metrics a
real stack exports, read from its /metrics after real requests; so renaming a metric
without the dashboard (or the reverse) fails here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import RunningStack, png

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "trustserve.json"
DATASOURCE = "${DS_PROMETHEUS}"
# what each metric type puts on the page besides (or instead of) its family name
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
# Grafana's own variables stand in for a range; each is replaced by one before parsing
GRAFANA_RANGE = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")
LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*\w+\s*\)")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dash) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(GRAFANA_RANGE.sub("5m", expr)), visit)
    return names


@pytest.fixture(scope="module")
def exported(tiny_stack: RunningStack) -> set[str]:
    """The sample names a real stack's /metrics carries after a few real requests."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with tiny_stack.client() as c:
        for _ in range(3):
            assert c.post("/v2/models/tiny/infer", json=body).status_code == 200
        assert c.post("/v2/models/tiny/infer", content=b"{").status_code == 400
        assert c.post("/predictions/colour", content=png((200, 10, 10))).status_code == 200
    url = f"https://127.0.0.1:{tiny_stack.metrics_port}/metrics"
    page = httpx.get(url, verify=str(tiny_stack.ca)).text
    names = set()
    for family in text_string_to_metric_families(page):
        names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def unexported(dash: dict[str, Any], exported: set[str]) -> dict[str, list[str]]:
    """Each metric the dashboard queries (panels and variables) that the stack does not
    export, with the queries naming it."""
    used: dict[str, set[str]] = {}
    for expr in queries(dash):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(expr)
    for variable in dash["templating"]["list"]:
        if variable["type"] == "query":
            (name,) = LABEL_VALUES.findall(variable["definition"])
            used.setdefault(name, set()).add(variable["definition"])
    return {name: sorted(exprs) for name, exprs in used.items() if name not in exported}


def test_every_query_names_a_metric_the_stack_exports(exported: set[str]) -> None:
    missing = unexported(dashboard(), exported)
    assert not missing, f"the dashboard queries metrics the stack does not export: {missing}"
    assert len({n for e in queries(dashboard()) for n in metric_names(e)}) >= 12


def test_the_worker_metrics_have_panels() -> None:
    used = {n for expr in queries(dashboard()) for n in metric_names(expr)}
    for name in (
        "trustserve_requests_total",
        "trustserve_errors_total",
        "trustserve_request_seconds_bucket",
        "trustserve_inference_seconds_bucket",
        "trustserve_batch_size_bucket",
        "trustserve_queue_seconds_bucket",
        "trustserve_preprocess_seconds_bucket",
        "trustserve_queue_depth",
        "trustserve_workers_live",
        "trustserve_worker_restarts_total",
        "trustserve_key_refreshes_total",
    ):
        assert name in used, f"no panel shows {name}"


def test_every_panel_reads_the_prometheus_datasource_variable() -> None:
    dash = dashboard()
    (ds,) = [v for v in dash["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = []
    for panel in panels(dash):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE
            assert 'model=~"$model"' in target["expr"], target["expr"]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_a_renamed_metric_or_a_broken_query_is_caught(exported: set[str]) -> None:
    renamed = DASHBOARD.read_text().replace("trustserve_queue_seconds", "trustserve_queue_wait")
    missing = unexported(json.loads(renamed), exported)
    assert set(missing) == {"trustserve_queue_wait_bucket"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(trustserve_requests_total[5m])")
