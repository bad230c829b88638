"""The dev overlay's pods, run here as processes: the manifests' own commands, files and names.

No Kubernetes can run on this machine, so each rendered workload (Redis, KMS, worker,
frontend) becomes a process the way a kubelet would start it: its Secrets (from
make-secrets.sh) and ConfigMaps are written where its volumes are mounted, under a
directory of its own; ``$(VAR)`` in its args is expanded from its env; the cluster's
service names resolve to 127.0.0.1 in a private mount namespace (``unshare -m`` with
its own /etc/hosts). The only changes: paths move under a temporary directory, ports
are free ones, listeners bind 127.0.0.1, and the worker serves a small test model.
A v2 inference request then crosses frontend, Redis (TLS, per-role ACL users), the
worker and the KMS (sim attestation, the dev policies, an encrypted archive), the
frontend and worker trusting the KMS by its sim bundle under the dev KMS trust policy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.deploy.test_k8s import find, render, target
from tests.support import free_port, tiny_expected, write_tiny

SERVICE_NAMES = ("trustserve-kms", "trustserve-redis.trustserve.svc.cluster.local")
Obj = dict[str, Any]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind /etc/hostname /etc/hosts"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


class Cluster:
    """Runs rendered workloads as local processes."""

    def __init__(self, root: Path, objs: list[Obj], secrets: dict[str, dict[str, bytes]]):
        self.root, self.objs, self.secrets = root, objs, secrets
        self.ports = {8443: free_port(), 6380: free_port(), 8080: free_port()}
        self.hosts = root / "hosts"
        self.hosts.write_text("".join(f"127.0.0.1 {n}\n" for n in ("localhost", *SERVICE_NAMES)))
        (root / "models").mkdir()
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def _ports(self, text: str) -> str:
        for old, new in self.ports.items():
            text = re.sub(rf"\b{old}\b", str(new), text)
        return text.replace("0.0.0.0", "127.0.0.1")

    def place(self, kind: str, name: str) -> tuple[Obj, Callable[[str], str]]:
        """Write the workload's volumes under root/name; return its container and a path mapper."""
        spec = find(self.objs, kind, name)["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {}
        for m in sorted(c["volumeMounts"], key=lambda m: len(m["mountPath"])):
            where = self.root / name / m["mountPath"].lstrip("/")
            volume = volumes.get(m["name"], {})
            if "persistentVolumeClaim" in volume and m["mountPath"] == "/models":
                where.parent.mkdir(parents=True, exist_ok=True)
                where.symlink_to(self.root / "models")
            else:
                where.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = str(where)
        pattern = re.compile(
            "(" + "|".join(map(re.escape, sorted(mounts, key=len, reverse=True))) + r")(?![\w.-])"
        )

        def paths(text: str) -> str:
            return self._ports(pattern.sub(lambda m: mounts[m.group(1)], text))

        for m in c["volumeMounts"]:
            volume, where = volumes.get(m["name"], {}), Path(mounts[m["mountPath"]])
            if "secret" in volume:
                for key, value in self.secrets[volume["secret"]["secretName"]].items():
                    (where / key).write_bytes(value)
                    (where / key).chmod(0o600)
            elif "configMap" in volume:
                data = find(self.objs, "ConfigMap", volume["configMap"]["name"])["data"]
                for key, value in data.items():
                    (where / key).write_text(paths(value))
        return c, paths

    def start(self, kind: str, name: str, **env_overrides: str) -> None:
        c, paths = self.place(kind, name)
        values = target(self.objs)
        env: dict[str, str] = {}  # as the container sees it
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            env[e["name"]] = values[ref["key"]] if ref else e["value"]
        env.update(env_overrides)
        args = [
            paths(re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)) for a in c.get("args", [])
        ]
        env = {k: paths(v) for k, v in env.items()}
        if c["image"].rsplit("/", 1)[-1].startswith("redis"):
            conf = Path(paths(c["command"][1]))
            conf.write_text(conf.read_text() + "bind 127.0.0.1\n")
            argv = [str(shutil.which("redis-server")), str(conf)]
        else:
            argv = [sys.executable, "-m", "trustserve.cli", *args]
            if args[0] == "serve":
                argv += ["--management-port", str(free_port()), "--metrics-port", str(free_port())]
        wrapped = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"']
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*wrapped, str(self.hosts), *argv],
                env={"PATH": "/usr/bin:/bin", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((name, proc, log))

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{log.read_text()[-2500:]}" for n, _, log in self.procs)

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc, _ in self.procs:
                assert proc.poll() is None, f"{name} exited while waiting for {what}\n{self.logs()}"
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            proc.terminate()
        for _, proc, _ in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path: Path, secrets: dict[str, dict[str, bytes]]) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None or not _unshare_works():
        pytest.skip("needs redis-server and unshare -m (root) to give the pods their names")
    running = Cluster(tmp_path, render("dev"), secrets)
    try:
        yield running
    finally:
        running.stop()


def test_the_dev_overlay_serves_an_encrypted_model_end_to_end(
    cluster: Cluster, secrets: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    ca = tmp_path / "deployment-ca.pem"
    ca.write_bytes(secrets["trustserve-ca"]["ca.pem"])
    kms_port, frontend_port = cluster.ports[8443], cluster.ports[8080]
    cluster.start("StatefulSet", "trustserve-redis")
    cluster.start("StatefulSet", "trustserve-kms")
    kms = f"https://localhost:{kms_port}"
    cluster.wait(lambda: httpx.get(f"{kms}/healthz", verify=str(ca)).status_code == 200, "KMS")

    # the model owner encrypts against the deployment's KMS, as docs/deploy.md says
    plain = write_tiny(tmp_path / "plain")
    token = tmp_path / "trustserve-kms/var/lib/trustserve/kms/admin.token"
    encrypt = [sys.executable, "-m", "trustserve.cli", "model", "encrypt", str(plain)]
    encrypt += ["-o", str(tmp_path / "models/tiny.tsm"), "--kms", kms, "--ca", str(ca)]
    subprocess.run([*encrypt, "--token-file", str(token)], check=True, capture_output=True)

    cluster.start("Deployment", "trustserve-worker", TRUSTSERVE_ARCHIVE="/models/tiny.tsm")
    cluster.start("Deployment", "trustserve-frontend")
    url = f"https://localhost:{frontend_port}"
    cluster.wait(
        lambda: httpx.get(f"{url}/v2/health/ready", verify=str(ca)).status_code == 200,
        "the frontend's readiness probe",
    )
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]
    }
    answer = httpx.post(f"{url}/v2/models/tiny/infer", json=body, verify=str(ca), timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    y, s = tiny_expected(x)
    assert outputs["y"] == y.ravel().tolist() and outputs["s"] == s.ravel().tolist()
    # the KMS released keys to the attested (sim) frontend and worker, and logged it
    audit = (tmp_path / "trustserve-kms/var/lib/trustserve/kms").glob("audit*")
    assert any(b'"release"' in p.read_bytes() for p in audit if p.is_file()), cluster.logs()
    # the pods trusted the KMS by its (sim) attestation, and said loudly that proves nothing
    for pod in ("trustserve-worker", "trustserve-frontend"):
        assert "accepts SIMULATED evidence" in (tmp_path / f"{pod}.log").read_text(), pod
    # the model store holds ciphertext only
    assert (
        json.dumps(x.ravel().tolist()).encode() not in (tmp_path / "models/tiny.tsm").read_bytes()
    )
