"""The home directory's layout, from trustserve.home: what config show, the worker and the
docs say about where things live under HOME agrees with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trustserve import home

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_config_show_names_the_home_layout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTSERVE_")}
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "config", "show"],
        capture_output=True, text=True, check=True, env={**env, "TRUSTSERVE_HOME": str(tmp_path)},
    ).stdout  # fmt: skip
    shown = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert shown["home"] == str(tmp_path)
    assert shown["kms.ca"] == str(home.ca_file(tmp_path)) == str(tmp_path / "tls" / "ca.pem")
    assert shown["model_store"] == str(home.model_store(tmp_path))
    assert shown["tls.cert"] == str(tmp_path / "tls" / "server.pem")


def test_the_docs_list_every_place_under_home() -> None:
    text = DOC.read_text()
    h = Path("/H")
    for where in (
        home.ca_file(h),
        home.kms_dir(h),
        home.model_store(h),
        home.run_dir(h),
        home.sample_image(h),
        home.management_token(h),
        home.config_file(h),
    ):
        relative = where.relative_to(h).as_posix()
        assert f"`{relative}" in text, f"docs/configuration.md does not say where {relative} is"


def test_a_given_ca_wins_over_the_local_one(tmp_path: Path) -> None:
    assert home.trusted_ca(tmp_path) == tmp_path / "tls" / "ca.pem"
    assert home.trusted_ca(tmp_path, "/etc/kms-ca.pem") == Path("/etc/kms-ca.pem")
