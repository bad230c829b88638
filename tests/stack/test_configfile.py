"""trustserve.yaml: precedence (flag > TRUSTSERVE_* > file > default), errors that name the
key, ``trustserve config show``, and a stack that takes its ports and models from the file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, write_tiny
from trustserve.cli import build_parser
from trustserve.errors import ConfigError
from trustserve.stack import configfile
from trustserve.stack.cli import _settings
from trustserve.stack.config import Settings


def settings_for(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    args = build_parser().parse_args(["serve", *argv])
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        return _settings(args)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    conf = tmp_path / "trustserve.yaml"
    conf.write_text("listen: {port: 9001, metrics_port: 9003}\nworker: {threads: 3}\n")
    home = ["--home", str(tmp_path)]
    s = settings_for([*home, "--config", str(conf)])
    assert (s.inference_port, s.metrics_port, s.worker.threads) == (9001, 9003, 3)
    assert s.management_port == 8081  # the default
    s = settings_for([*home, "--config", str(conf)], {"TRUSTSERVE_LISTEN_PORT": "9100"})
    assert s.inference_port == 9100
    s = settings_for(
        [*home, "--config", str(conf), "--port", "9200"], {"TRUSTSERVE_LISTEN_PORT": "9100"}
    )
    assert s.inference_port == 9200


def test_home_trustserve_yaml_is_read_without_being_named(tmp_path: Path) -> None:
    (tmp_path / "trustserve.yaml").write_text("limits: {max_queue: 7}\n")
    assert settings_for(["--home", str(tmp_path)]).max_queue == 7


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("listen: {prot: 8080}\n", "listen.prot"),
        ("worker: {threads: many}\n", "worker.threads"),
        ("tls: {insecure_http: perhaps}\n", "tls.insecure_http"),
        ("kms: [1, 2]\n", "kms"),
        ("- just a list\n", "top level"),
    ],
)
def test_unknown_keys_and_wrong_types_are_errors_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        settings_for(["--home", str(tmp_path), "--config", str(conf)])


def test_a_wrong_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRUSTSERVE_LIMITS_MAX_QUEUE"):
        settings_for(["--home", str(tmp_path)], {"TRUSTSERVE_LIMITS_MAX_QUEUE": "lots"})


def test_every_setting_has_one_environment_variable() -> None:
    envs = [k.env for k in configfile.KEYS]
    assert len(set(envs)) == len(envs)
    assert "TRUSTSERVE_HOME" in envs and "TRUSTSERVE_KMS_URL" in envs


def test_config_show_prints_each_value_and_where_it_came_from(tmp_path: Path) -> None:
    conf = tmp_path / "trustserve.yaml"
    conf.write_text("worker: {engine: openvino}\nkms: {url: 'https://kms.internal:8443'}\n")
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "config", "show", "--home", str(tmp_path),
         "--threads", "2"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "TRUSTSERVE_LISTEN_PORT": "9443"},
    ).stdout  # fmt: skip
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert lines["worker.engine"] == ["openvino", str(conf)]
    assert lines["kms.url"] == ["https://kms.internal:8443", str(conf)]
    assert lines["worker.threads"] == ["2", "flag"]
    assert lines["listen.port"] == ["9443", "environment"]
    assert lines["listen.management_port"] == ["8081", "default"]
    assert f"configuration file: {conf}" in out


def test_serve_takes_its_ports_and_workers_from_the_file(tmp_path: Path) -> None:
    write_tiny(tmp_path / "store")
    port = free_port()
    conf = tmp_path / "serve.yaml"
    conf.write_text(
        f"model_store: {tmp_path / 'store'}\n"
        f"listen: {{port: {port}, management_port: {free_port()}, metrics_port: {free_port()}}}\n"
        "worker: {per_model: 1}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "serve", "--home", str(tmp_path / "home")],
        env={**os.environ, "TRUSTSERVE_CONFIG": str(conf)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                r = httpx.get(
                    f"https://localhost:{port}/v2/models/tiny/ready",
                    verify=str(tmp_path / "home/tls/ca.pem"),
                )
                if r.status_code == 200:
                    break
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(20)
