"""What an operator reads: the banner's commands, and a port that is already taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import free_port, write_tiny
from trustserve.stack.banner import banner, sample_image
from trustserve.stack.config import Settings


def test_banner_suggests_only_models_that_are_served(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, dev=True)
    text = banner(s, ["tiny"], [])
    assert "/v2/models/tiny" in text
    assert "resnet50" not in text and "digits" not in text
    assert "try:" not in banner(s, [], [])


def test_banner_predict_command_runs_from_here_and_allows_sim_only_when_simulated(
    tmp_path: Path,
) -> None:
    s = Settings(home=tmp_path, dev=True)
    sample_image(s).parent.mkdir(parents=True)
    sample_image(s).write_bytes(b"\xff\xd8 a jpeg")
    predict = next(
        line for line in banner(s, ["resnet50"], ["resnet50"]).splitlines() if "predict " in line
    )
    program = predict.split()[0]
    assert program == "trustserve" or Path(program).is_file()
    assert "--allow-simulated" in predict and str(sample_image(s)) in predict
    assert f"--ca {tmp_path / 'tls/ca.pem'}" in predict  # not the default home: say which CA


def test_every_port_in_use_is_named_with_the_setting_that_moves_it(tmp_path: Path) -> None:
    write_tiny(tmp_path / "store")
    with socket.socket() as taken, socket.socket() as taken_too:
        for s in (taken, taken_too):
            s.bind(("127.0.0.1", 0))
            s.listen()
        port, metrics = taken.getsockname()[1], taken_too.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "trustserve.cli", "serve", "--home", str(tmp_path / "h"),
             "--model-store", str(tmp_path / "store"), "--port", str(port),
             "--management-port", str(free_port()), "--metrics-port", str(metrics)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 2
    assert f"cannot listen on 2 port(s): 127.0.0.1:{port} (inference, --port" in out.stderr
    assert f"127.0.0.1:{metrics} (metrics, --metrics-port)" in out.stderr
    assert "Traceback" not in out.stderr


def test_up_checks_its_ports_before_building_the_demo_models(tmp_path: Path) -> None:
    """On a fresh home the demo build takes tens of seconds: a taken port is said first."""
    cache = tmp_path / "cache"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "trustserve.cli", "up", "--home", str(tmp_path / "h"),
             "--port", str(free_port()), "--management-port", str(port),
             "--metrics-port", str(free_port()), "--kms-port", str(port)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"127.0.0.1:{port} (management, --management-port): " in out.stderr
    assert f"{port} (embedded KMS, --kms-port / kms.port) is also the management port" in (
        out.stderr
    )
    assert not (cache / "trustserve").exists()  # nothing was built


def test_serve_prints_its_banner_once_up_with_the_models_it_serves(tmp_path: Path) -> None:
    """Printed when the front doors listen, not after a fixed delay (a slow start once
    printed 'models (none)' and no commands)."""
    write_tiny(tmp_path / "store")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "serve", "--home", str(tmp_path / "h"),
         "--model-store", str(tmp_path / "store"), "--port", str(free_port()),
         "--management-port", str(free_port()), "--metrics-port", str(free_port()),
         "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("try:") or len(lines) > 40:
                break
        text = "\n".join(lines)
        assert "trustserve is up" in text
        assert [ln.split()[1:] for ln in lines if ln.strip().startswith("models")] == [["tiny"]]
        assert "/v2/models/tiny" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(20)
