"""Fixtures for the deployment tests: the Secrets the documented step makes."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "k8s" / "make-secrets.sh"
ENV = {**os.environ, "TRUSTSERVE": f"{sys.executable} -m trustserve.cli"}
KUBERNETES_VERSION = "1.30"
# the name clients use for the frontend (added to its certificate), and localhost for tests
FRONTEND_NAMES = ("serve.example.org", "localhost")


@pytest.fixture(scope="session")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    if shutil.which("openssl") is None or shutil.which("kubectl") is None:
        pytest.skip("make-secrets.sh needs openssl and kubectl")
    out = tmp_path_factory.mktemp("secrets") / "out"
    subprocess.run(
        [str(SCRIPT), str(out), *FRONTEND_NAMES], check=True, capture_output=True, env=ENV
    )
    made: dict[str, dict[str, bytes]] = {}
    for doc in yaml.safe_load_all((out / "secrets.yaml").read_text()):
        if doc:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            assert doc["metadata"]["namespace"] == "trustserve"
            made[doc["metadata"]["name"]] = {
                k: base64.b64decode(v) for k, v in doc.get("data", {}).items()
            }
    return made
