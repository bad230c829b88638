"""Writes the JSON schemas of KServe's CRDs that deploy/kserve/ is validated against.

    python deploy/kserve/schemas/extract.py KSERVE_CHECKOUT COMMIT

reads ``config/crd/full/serving.kserve.io_<plural>.yaml`` of a kserve checkout and writes,
for each CRD version, its ``openAPIV3Schema`` as ``<kind>-<version>.json`` here, with the
``description`` texts left out (documentation, no effect on validation) and nothing else
changed. The Kubernetes extensions (``x-kubernetes-*``) are kept as they are: the test
(tests/deploy/test_kserve.py) gives them their meaning when it loads a schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = ("clusterservingruntimes", "servingruntimes", "inferenceservices")
HERE = Path(__file__).resolve().parent


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        # a property may itself be named "description": only drop the annotation
        return {
            k: without_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def main(checkout: Path, commit: str) -> None:
    for plural in CRDS:
        path = checkout / "config" / "crd" / "full" / f"serving.kserve.io_{plural}.yaml"
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = without_descriptions(version["schema"]["openAPIV3Schema"])
            schema["$comment"] = (
                f"openAPIV3Schema of {kind} {crd['spec']['group']}/{version['name']} from "
                f"github.com/kserve/kserve {commit} {path.relative_to(checkout)} "
                "(Apache-2.0), descriptions left out"
            )
            out = HERE / f"{kind.lower()}-{version['name']}.json"
            out.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
            print(out.name, out.stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
