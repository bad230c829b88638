"""The dev overlay's pods, run here as processes: the manifests' own commands, files and names.

No Kubernetes can run on this machine, so each rendered pod (three etcd members, the
Redis primary and replica, three Sentinels, three KMS replicas, two workers, a frontend)
becomes a process the way a kubelet would start it: its Secrets (from make-secrets.sh)
and ConfigMaps are written where its volumes are mounted, under a directory of its own;
``$(VAR)`` in its command and args is expanded from its env (the pod's name from the
Downward API); its start script runs as written (``sh -c``, with that env), the image's
``trustserve`` being the CLI here; the pods' and services' DNS names resolve in a
private mount namespace (``unshare -m`` with its own /etc/hosts), each replica of etcd,
Redis and the Sentinels at an address of its own (127.0.0.N). The only changes: paths
move under a temporary directory, ports are free ones, listeners bind their pod's
address, and the worker serves a small test model. A v2 inference request then crosses
frontend, Redis (found through the Sentinels; TLS, per-role ACL users), the worker and
the KMS (its state in etcd; sim attestation, the dev policies, an encrypted archive),
the frontend and worker trusting the KMS by its sim bundle under the dev KMS trust
policy; trustserve-kms-1 and -2 (``kms serve --join``) get the root key from the first
by mutual attestation. Then the Redis primary is killed and the Sentinels' failover
followed, and trustserve-kms-0 is killed: requests go on, and a worker started after
that gets its keys from the replicas that joined.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from tests.deploy.test_k8s import find, render, target
from tests.support import free_port, tiny_expected, write_tiny

NAMESPACE = "trustserve"
# replicas that share a port get an address each: (first address, pods)
SPREAD = {"trustserve-etcd": 10, "trustserve-redis": 20, "trustserve-redis-sentinel": 30}
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


def known_to_sentinel(log: str) -> set[str]:
    """The pods a Sentinel's log says it found (``+sentinel``, ``+slave``), by pod name."""
    found = re.finditer(r"\+(?:sentinel sentinel \w+|slave slave) ([\w-]+)\.", log)
    return {m.group(1) for m in found}


def address(pod: str) -> str:
    workload, _, ordinal = pod.rpartition("-")
    if workload in SPREAD:
        return f"127.0.0.{SPREAD[workload] + int(ordinal)}"
    if workload == "trustserve-kms" and ordinal != "0":
        return f"127.0.0.{40 + int(ordinal)}"
    return "127.0.0.1"


class Cluster:
    """Runs rendered pods as local processes."""

    def __init__(self, root: Path, objs: list[Obj], secrets: dict[str, dict[str, bytes]]):
        self.root, self.objs, self.secrets = root, objs, secrets
        ports = (8443, 6380, 26380, 2379, 2380, 2381, 8080, 8084)
        self.ports = {port: free_port() for port in ports}
        self.hosts = root / "hosts"
        self.hosts.write_text(self._hosts())
        (root / "models").mkdir()
        # the image's entrypoint, trustserve, is this checkout's CLI
        (root / "bin").mkdir()
        (root / "bin" / "trustserve").write_text(
            f'#!/bin/sh\nexec {sys.executable} -m trustserve.cli "$@"\n'
        )
        (root / "bin" / "trustserve").chmod(0o755)
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def _hosts(self) -> str:
        lines = ["127.0.0.1 localhost"]
        for obj in self.objs:
            if obj["kind"] == "StatefulSet":
                service, name = obj["spec"]["serviceName"], obj["metadata"]["name"]
                for n in range(obj["spec"]["replicas"]):
                    short = f"{name}-{n}.{service}"
                    lines.append(
                        f"{address(f'{name}-{n}')} {short} {short}.{NAMESPACE}.svc "
                        f"{short}.{NAMESPACE}.svc.cluster.local"
                    )
            if obj["kind"] == "Service" and obj["spec"].get("clusterIP") != "None":
                # a Service's address: here, its first pod's
                name = obj["metadata"]["name"]
                first = address(f"{name}-0")
                lines.append(
                    f"{first} {name} {name}.{NAMESPACE}.svc {name}.{NAMESPACE}.svc.cluster.local"
                )
        return "".join(f"{line}\n" for line in lines)

    def _ports(self, text: str, pod: str) -> str:
        # one pass: a free port that happens to equal another manifest port stays as it is
        known = "|".join(map(str, self.ports))
        text = re.sub(rf"\b({known})\b", lambda m: str(self.ports[int(m.group(1))]), text)
        return text.replace("0.0.0.0", address(pod))

    def place(self, kind: str, name: str, pod: str) -> tuple[Obj, Callable[[str], str]]:
        """Write the pod's volumes under root/pod; return its container and a path mapper."""
        spec = find(self.objs, kind, name)["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {}
        for m in sorted(c["volumeMounts"], key=lambda m: len(m["mountPath"])):
            where = self.root / pod / m["mountPath"].lstrip("/")
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
            return self._ports(pattern.sub(lambda m: mounts[m.group(1)], text), pod)

        redis = c["image"].rsplit("/", 1)[-1].startswith("redis")
        for m in c["volumeMounts"]:
            volume, where = volumes.get(m["name"], {}), Path(mounts[m["mountPath"]])
            if "secret" in volume:
                wanted = {i["key"]: i["path"] for i in volume["secret"].get("items", [])}
                for key, value in self.secrets[volume["secret"]["secretName"]].items():
                    if wanted and key not in wanted:
                        continue
                    (where / wanted.get(key, key)).write_bytes(value)
                    (where / wanted.get(key, key)).chmod(0o600)
            elif "configMap" in volume:
                data = find(self.objs, "ConfigMap", volume["configMap"]["name"])["data"]
                for key, value in data.items():
                    # Redis and the Sentinels listen on all addresses; here, on their own
                    extra = f"bind {address(pod)}\n" if redis else ""
                    (where / key).write_text(paths(value) + extra)
        return c, paths

    def start(
        self, kind: str, name: str, ordinal: int | None = None, pod: str = "", **env: str
    ) -> None:
        """Start one pod of the workload ``name`` (a StatefulSet's by ``ordinal``; another
        of a Deployment's by ``pod``), ``env`` overriding its environment."""
        env_overrides = env
        pod = pod or (name if ordinal is None else f"{name}-{ordinal}")
        c, paths = self.place(kind, name, pod)
        values = target(self.objs)
        env: dict[str, str] = {}  # as the container sees it
        for e in c.get("env", []):
            source = e.get("valueFrom", {})
            if "configMapKeyRef" in source:
                env[e["name"]] = values[source["configMapKeyRef"]["key"]]
            elif "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.name"
                env[e["name"]] = pod
            else:
                env[e["name"]] = e["value"]
        env.update(env_overrides)
        argv = [
            paths(re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a))
            for a in (*c.get("command", ["trustserve"]), *c.get("args", []))
        ]
        env = {k: paths(v) for k, v in env.items()}
        if argv[:2] == ["trustserve", "serve"]:
            argv += ["--management-port", str(free_port()), "--metrics-port", str(free_port())]
        wrapped = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"']
        log = self.root / f"{pod}.log"
        path = f"{self.root / 'bin'}:/usr/bin:/bin"
        inherited = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*wrapped, str(self.hosts), *argv],
                env={**inherited, "PATH": path, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((pod, proc, log))

    def kill(self, pod: str) -> None:
        """SIGKILL, as a lost node: the pod's process is gone without a word."""
        (found,) = [entry for entry in self.procs if entry[0] == pod]
        found[1].kill()
        found[1].wait()
        self.procs.remove(found)

    def log(self, pod: str) -> str:
        return (self.root / f"{pod}.log").read_text()

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


def etcd_range(
    cluster: Cluster,
    secrets: dict[str, dict[str, bytes]],
    tmp_path: Path,
    client: str | None,
    body: dict[str, str],
) -> dict[str, Any]:
    """``/v3/kv/range`` at trustserve-etcd-1, showing the client certificate of the Secret
    ``client`` (None: none)."""
    context = ssl.create_default_context(cadata=secrets["trustserve-etcd-tls"]["ca.crt"].decode())
    context.check_hostname = False  # by address: the certificate names the pod
    if client is not None:
        where = tmp_path / f"etcd-client-{client}"
        where.mkdir(exist_ok=True)
        for key in ("tls.crt", "tls.key"):
            (where / key).write_bytes(secrets[client][key])
        context.load_cert_chain(where / "tls.crt", where / "tls.key")
    url = f"https://{address('trustserve-etcd-1')}:{cluster.ports[2379]}/v3/kv/range"
    with httpx.Client(verify=context, timeout=10) as http:
        answer = http.post(url, json=body)
    answer.raise_for_status()
    parsed: dict[str, Any] = answer.json()
    return parsed


def sentinel_client(
    cluster: Cluster, secrets: dict[str, dict[str, bytes]], tmp_path: Path, user: str | None
) -> redis.Redis:
    """A client of trustserve-redis-sentinel-0 with the frontend's certificate, logged in as
    ``user`` with that user's password (None: no login)."""
    tls = tmp_path / "frontend-redis-client"
    tls.mkdir(exist_ok=True)
    secret = secrets["trustserve-redis-frontend"]
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tls / key).write_bytes(secret[key])
    # by address: the certificate names the pod (checked in test_k8s_secrets.py)
    return redis.Redis(
        host=address("trustserve-redis-sentinel-0"), port=cluster.ports[26380],
        username=user, password=secret["password"].decode() if user else None,
        ssl=True, ssl_ca_certs=str(tls / "ca.crt"), ssl_check_hostname=False,
        ssl_certfile=str(tls / "tls.crt"), ssl_keyfile=str(tls / "tls.key"), socket_timeout=5,
    )  # fmt: skip


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
    for n in range(3):
        cluster.start("StatefulSet", "trustserve-etcd", n)
    for n in range(2):
        cluster.start("StatefulSet", "trustserve-redis", n)
    for n in range(3):
        cluster.start("StatefulSet", "trustserve-redis-sentinel", n)
    cluster.start("StatefulSet", "trustserve-kms", 0)
    kms = f"https://localhost:{kms_port}"
    cluster.wait(lambda: httpx.get(f"{kms}/healthz", verify=str(ca)).status_code == 200, "KMS")
    # the other replicas get the root key from trustserve-kms-0 by mutual attestation
    by_address = ssl.create_default_context(cafile=str(ca))
    by_address.check_hostname = False  # the certificate names the pod, not 127.0.0.4x
    for n in (1, 2):
        cluster.start("StatefulSet", "trustserve-kms", n)
        replica = f"https://{address(f'trustserve-kms-{n}')}:{kms_port}/healthz"

        def joined(url: str = replica) -> bool:
            return httpx.get(url, verify=by_address).status_code == 200

        cluster.wait(joined, f"trustserve-kms-{n} joining")
    joins = (tmp_path / "trustserve-kms-0/var/lib/trustserve/kms/audit.jsonl").read_text()
    assert joins.count('"event":"replica-join"') == 2

    # the model owner encrypts against the deployment's KMS, as docs/deploy.md says
    plain = write_tiny(tmp_path / "plain")
    token = tmp_path / "trustserve-kms-0/var/lib/trustserve/kms/admin.token"
    encrypt = [sys.executable, "-m", "trustserve.cli", "model", "encrypt", str(plain)]
    encrypt += ["-o", str(tmp_path / "models/tiny.tsm"), "--kms", kms, "--ca", str(ca)]
    subprocess.run([*encrypt, "--token-file", str(token)], check=True, capture_output=True)

    archive = "/models/tiny.tsm"
    cluster.start("Deployment", "trustserve-worker", TRUSTSERVE_ARCHIVE=archive)
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
    y, s = tiny_expected(x)

    def infer() -> httpx.Response:
        return httpx.post(f"{url}/v2/models/tiny/infer", json=body, verify=str(ca), timeout=30)

    def check(answer: httpx.Response) -> None:
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["y"] == y.ravel().tolist() and outputs["s"] == s.ravel().tolist()

    check(infer())
    # the replica follows the primary over TLS as `replicator`; each Sentinel finds it and
    # the other Sentinels by the names the manifests give them
    cluster.wait(
        lambda: (
            "MASTER <-> REPLICA sync: Finished with success" in cluster.log("trustserve-redis-1")
        ),
        "the replica's first sync",
    )
    for n in range(3):
        pod = f"trustserve-redis-sentinel-{n}"
        wanted = {f"trustserve-redis-sentinel-{m}" for m in range(3) if m != n}

        def sees_all(pod: str = pod, wanted: set[str] = wanted | {"trustserve-redis-1"}) -> bool:
            return wanted <= known_to_sentinel(cluster.log(pod))

        cluster.wait(sees_all, f"{pod} finding the replica and the other Sentinels")
    # the KMS keeps its keys in etcd, not on its own disk (only what it has seen: its version)
    kms_home = tmp_path / "trustserve-kms-0/var/lib/trustserve/kms"
    assert (kms_home / "state-version").exists() and not (kms_home / "state.json").exists()
    # etcd answers the KMS's client certificate only: not a client without one, nor one
    # with a certificate of another CA of the deployment (Redis's, for the frontend)
    state_key = {"key": base64.b64encode(b"/trustserve/kms/state").decode()}
    assert etcd_range(cluster, secrets, tmp_path, "trustserve-etcd-client", state_key)["kvs"]
    for other in (None, "trustserve-redis-frontend"):
        with pytest.raises(httpx.TransportError):
            etcd_range(cluster, secrets, tmp_path, other, state_key)

    # a compromised frontend may ask the Sentinels where the primary is, not move it; a
    # client without a password gets nothing
    primary = f"trustserve-redis-0.trustserve-redis-pods.{NAMESPACE}.svc.cluster.local"
    with sentinel_client(cluster, secrets, tmp_path, "frontend") as frontend:
        assert frontend.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "trustserve") == [
            primary.encode(),
            str(cluster.ports[6380]).encode(),
        ]
        for command in (("FAILOVER", "trustserve"), ("REMOVE", "trustserve")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                frontend.execute_command("SENTINEL", *command)
    with (
        pytest.raises(redis.exceptions.AuthenticationError),
        sentinel_client(cluster, secrets, tmp_path, None) as stranger,
    ):
        stranger.execute_command("SENTINEL", "FAILOVER", "trustserve")

    # the primary's node is lost: the Sentinels promote the replica, the frontend and the
    # worker follow, and requests are answered again
    cluster.kill("trustserve-redis-0")
    cluster.wait(lambda: infer().status_code == 200, "a request answered after the failover", 180)
    check(infer())
    assert "MASTER MODE enabled" in cluster.log("trustserve-redis-1")

    # trustserve-kms-0's node is lost too: requests go on, and a worker started now gets
    # its keys from the replicas that joined
    cluster.kill("trustserve-kms-0")
    check(infer())
    cluster.start(
        "Deployment", "trustserve-worker", pod="trustserve-worker-b", TRUSTSERVE_ARCHIVE=archive
    )
    cluster.wait(lambda: " ready: " in cluster.log("trustserve-worker-b"), "a new worker's keys")
    audits = [tmp_path / f"trustserve-kms-{n}/var/lib/trustserve/kms/audit.jsonl" for n in (1, 2)]
    released = [a.read_text() for a in audits if a.exists()]
    assert any('"event":"release"' in audit for audit in released), cluster.logs()
    # the KMS released keys to the attested (sim) frontend and worker, and logged it
    audit = (tmp_path / "trustserve-kms-0/var/lib/trustserve/kms").glob("audit*")
    assert any(b'"release"' in p.read_bytes() for p in audit if p.is_file()), cluster.logs()
    # the pods trusted the KMS by its (sim) attestation, and said loudly that proves nothing
    for pod in ("trustserve-worker", "trustserve-frontend"):
        assert "accepts SIMULATED evidence" in (tmp_path / f"{pod}.log").read_text(), pod
    # the model store holds ciphertext only
    assert (
        json.dumps(x.ravel().tolist()).encode() not in (tmp_path / "models/tiny.tsm").read_bytes()
    )
