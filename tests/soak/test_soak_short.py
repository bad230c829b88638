"""A shortened soak (``make soak`` runs the full one): the whole mix against a real stack for
a few seconds, with no 5xx, every valid request answered and no process growing past bounds."""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import main


def test_short_soak_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    code = main(["--seconds", "12", "--concurrency", "3", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report["failures"] + report["growth_problems"]
    assert report["final_valid_request"] == 200
    kinds = {k.split()[0] for k in report["by_kind"]}
    assert kinds >= {"json", "binary", "sealed", "invalid", "oversized", "cancelled", "slow"}
    assert not any(int(s) >= 500 for s in report["by_status"])
    assert all(k.split()[1] == "409" for k in report["by_kind"] if k.startswith("replayed"))
    assert len(report["start"]) >= 2  # the stack and at least one worker were measured
