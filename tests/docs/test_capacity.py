"""docs/capacity.md's tables are what the capacity model makes of the measured inputs
(bench/results/capacity.json, written by bench/capacity.py): doc and measurement agree."""

from __future__ import annotations

import json
import sys

from tests.docs.blocks import ROOT


def test_the_tables_are_the_models_output_of_the_measured_inputs() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.capacity_model import doc_tables, tables

    inputs = json.loads((ROOT / "bench" / "results" / "capacity.json").read_text())
    found = doc_tables((ROOT / "docs" / "capacity.md").read_text())
    assert found == tables(inputs, inputs["raw_int8_img_s"]), (
        "docs/capacity.md's tables differ from the model: run "
        "`python bench/capacity.py --tables-only` (or measure again without it)"
    )
