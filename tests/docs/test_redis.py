"""docs/redis.md's scale-out recipe: ``redis config``, redis-server, a frontend and workers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx

from tests.docs.blocks import ROOT, DocShell, http_ok, marked_blocks, port_open
from tests.support import free_port

DOC = ROOT / "docs" / "redis.md"
DIGITS_ROW = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11]
DIGITS_ROW += [8, 0, 0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12]
DIGITS_ROW += [7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]  # a zero


def test_scale_out_recipe_serves(tmp_path: Path, demo_dir: Path) -> None:
    blocks = marked_blocks(DOC)
    redis_port, port = free_port(), free_port()
    home, work = tmp_path / "home", tmp_path / "work"
    (work / "models").mkdir(parents=True)
    shutil.copy(demo_dir / "digits.tsm", work / "models")
    shell = DocShell(
        cwd=work,
        home=home,
        substitutions={"--bind 127.0.0.1": f"--bind 127.0.0.1 --port {redis_port}"},
        env={  # the frontend's ports, by the environment the config file documents
            "TRUSTSERVE_LISTEN_PORT": str(port),
            "TRUSTSERVE_LISTEN_MANAGEMENT_PORT": str(free_port()),
            "TRUSTSERVE_LISTEN_METRICS_PORT": str(free_port()),
        },
    )
    printed = shell.run(blocks["redis-config"])
    urls = dict(re.findall(r"^(frontends|workers): +--broker '(\S+)'$", printed, re.M))
    assert urls.keys() == {"frontends", "workers"}, printed
    shell.env |= {"FRONTEND_URL": urls["frontends"], "WORKER_URL": urls["workers"]}
    ca = str(home / "tls" / "ca.pem")
    base = f"https://localhost:{port}"
    try:
        shell.start(blocks["redis-server"], port_open(redis_port))
        shell.start(blocks["redis-frontend"], http_ok(f"{base}/v2/health/live", ca))
        shell.start(blocks["redis-worker"], http_ok(f"{base}/v2/models/digits/ready", ca))
        answer = httpx.post(f"{base}/predictions/digits", json=DIGITS_ROW, verify=ca, timeout=30)
    finally:
        shell.stop()
    assert answer.status_code == 200, answer.text
    probabilities = answer.json()
    assert max(probabilities, key=probabilities.get) == "0", probabilities
