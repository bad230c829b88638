"""README.md's quick start, run as a user would after ``make up``.

``make up`` itself cannot run inside a test (it installs and blocks); the test runs what it
runs, ``trustserve up``, with free ports, then the README's marked commands against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.blocks import (
    ROOT,
    VENV_BIN,
    Block,
    DocShell,
    http_ok,
    json_documents,
    marked_blocks,
)
from tests.support import free_port

README = ROOT / "README.md"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[DocShell]:
    port, mgmt, metrics, kms = (free_port() for _ in range(4))
    home = tmp_path_factory.mktemp("readme") / "home"
    shell = DocShell(
        cwd=ROOT,  # the README's commands run from the checkout (.venv/bin/trustserve)
        home=home,
        substitutions={"~/.trustserve": str(home), "localhost:8080": f"localhost:{port}"},
    )
    up = Block(
        "make-up",
        f"{VENV_BIN}/trustserve up --demo-dir {demo_dir} --port {port} "
        f"--management-port {mgmt} --metrics-port {metrics} --kms-port {kms}\n",
        0,
        background=True,
    )
    ready = f"https://localhost:{port}/v2/health/ready"
    try:
        shell.start(
            up, http_ok(ready, verify=False)
        )  # readiness only: the commands verify with $CA
        yield shell
    finally:
        shell.stop()


def test_quick_start_commands_answer(quickstart: DocShell) -> None:
    out = quickstart.run(marked_blocks(README)["quickstart"])
    metadata, classes, sealed = json_documents(out)
    assert isinstance(metadata, dict) and metadata["name"] == "digits"
    assert {"inputs", "outputs", "versions"} <= metadata.keys()
    # TorchServe's answer for the sample picture: the top classes and their probabilities
    assert isinstance(classes, dict) and len(classes) == 5, classes
    assert all(0 <= p <= 1 for p in classes.values())
    # the sealed request through the verified attestation gets the same kind of answer
    assert isinstance(sealed, dict) and sealed.keys() == classes.keys(), sealed


def test_batch_command_scores_the_folder(quickstart: DocShell) -> None:
    import json

    quickstart.run(marked_blocks(README)["batch"])
    results = quickstart.home / "samples" / "results.jsonl"
    (line,) = [json.loads(t) for t in results.read_text().splitlines()]
    assert line["input"] == "sample.jpg" and len(line["outputs"]) == 5, line


def test_banner_names_the_sample_the_readme_uses(quickstart: DocShell) -> None:
    log = (quickstart.home.parent / "make-up.log").read_text()
    sample = quickstart.home / "samples" / "sample.jpg"
    assert sample.exists()
    assert f"--data-binary @{sample}" in log
