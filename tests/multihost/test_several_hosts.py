"""Several hosts without Kubernetes, as docs/deploy.md tells it: Redis from ``trustserve
redis config``, a standalone KMS, one frontend and one worker host, each with its own home.

Every "host" is a directory of its own; the only files that pass between them are those
the recipe copies (CA certificates, a role's broker credentials, the encrypted archive).
Attestation is simulated (no TEE hardware here): the KMS's release policy names the sim
platform keys of the frontend and the worker host. The commands run are the templates
below; ``test_the_doc_shows_the_commands_the_test_runs`` checks docs/deploy.md's blocks
marked ``<!-- doctest: multihost -->`` contain each of them (placeholders for host names,
ports, URLs and the identity), so the doc cannot drift from what was run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.multihost import hosts
from tests.multihost.hosts import Host
from tests.support import alive, free_port, tiny_expected, wait_http, worker_pids, write_tiny

ROOT = Path(__file__).resolve().parents[2]

REDIS_CONFIG = "trustserve redis config redis --host {redis_host} --port {redis_port} --bind {bind}"
REDIS_SERVER = "redis-server redis/redis.conf"
KEY_FILE = "trustserve kms init-key-file kms.key"
PLATFORM_KEY = "trustserve attest --provider sim --home home --report-data 00 -o platform.json"
KMS_SERVE = (
    "trustserve kms serve --home kms-home --host {bind} --port {kms_port}"
    " --policy release-policy.yaml --provider sim"
)
KMS_IDENTITY = "trustserve kms identity --home kms-home > kms-identity.txt"
ENCRYPT = (
    "trustserve model encrypt tiny-1.tsm -o tiny-1.enc.tsm --kms {kms_url}"
    " --ca kms-home/tls/ca.pem --token-file kms-home/kms/admin.token"
)
SERVE = (
    "trustserve serve --home home --model-store models --host {bind} --port {port}"
    " --management-port {management_port} --metrics-port {metrics_port} --workers 0"
    " --broker '{broker}' --kms {kms_url} --kms-ca kms-ca.pem --kms-identity kms-identity.txt"
)
WORKER = (
    "trustserve worker --home home --workers 2 --archive models/tiny-1.tsm"
    " --broker '{broker}' --kms {kms_url} --kms-ca kms-ca.pem --kms-identity kms-identity.txt"
)
WORKER_FROM_FILE = "trustserve worker --config trustserve.yaml --archive models/tiny-1.tsm"
MAKE_X = """python3 -c 'import numpy as np; np.save("x.npy", np.ones((1, 4), np.float32))'"""
PREDICT_SEALED = (
    "trustserve predict {frontend_url} tiny x.npy --ca frontend-ca.pem"
    " --allow-simulated --worker-policy release-policy.yaml"
)
PREDICT_STANDARD = "trustserve predict {frontend_url} tiny x.npy --ca frontend-ca.pem --standard"

KMS_ENV_NAME = "TRUSTSERVE_KMS_KEY_FILE"


def _broker_url(role: str, host: str, port: int) -> str:
    """The URL ``redis config`` printed, naming the copies on the role's host."""
    return (
        f"rediss://{role}@{host}:{port}/0?ca=broker/ca.pem&cert=broker/{role}.pem"
        f"&key=broker/{role}-key.pem&password_file=broker/{role}.password"
    )


def _give_broker_credentials(redis: Host, to: Host, role: str) -> None:
    for src, dst in [
        ("redis/tls/ca.pem", "broker/ca.pem"),
        (f"redis/tls/{role}.pem", f"broker/{role}.pem"),
        (f"redis/tls/{role}-key.pem", f"broker/{role}-key.pem"),
        (f"redis/{role}.password", f"broker/{role}.password"),
    ]:
        to.copy_from(redis, src, dst)


class Deployment:
    def __init__(self, root: Path) -> None:
        self.redis = Host("redis", root / "redis-host")
        self.kms = Host("kms", root / "kms-host")
        self.frontend = Host("frontend", root / "frontend-host")
        self.workers = Host("worker", root / "worker-host")
        self.client = Host("client", root / "client")
        self.bind = "127.0.0.1"
        self.redis_port, self.kms_port = free_port(), free_port()
        self.port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.kms_url = f"https://localhost:{self.kms_port}"
        self.frontend_url = f"https://localhost:{self.port}"
        self.worker_proc: subprocess.Popen[bytes] | None = None
        self.extra: list[Host] = []

    def all(self) -> list[Host]:
        return [self.client, *self.extra, self.workers, self.frontend, self.kms, self.redis]

    def platform_key(self, host: Host) -> str:
        host.run(PLATFORM_KEY)
        return str(json.loads((host.dir / "platform.json").read_text())["data"]["public_key"])

    def up(self) -> None:
        r, k, f, w = self.redis, self.kms, self.frontend, self.workers
        r.run(REDIS_CONFIG, redis_host="localhost", redis_port=str(self.redis_port), bind=self.bind)
        redis_proc = r.start(REDIS_SERVER)
        _give_broker_credentials(r, f, "frontend")
        _give_broker_credentials(r, w, "worker")

        # The release policy names the sim platform keys of the frontend and worker hosts.
        keys = [self.platform_key(f), self.platform_key(w)]
        policy = {"allow_simulated": True, "measurements": [{"tee": "sim"}],
                  "sim_platform_keys": keys}  # fmt: skip
        (k.dir / "release-policy.yaml").write_text(json.dumps(policy))
        k.run(KEY_FILE)
        env = {KMS_ENV_NAME: "kms.key"}
        kms_proc = k.start(KMS_SERVE, env, bind=self.bind, kms_port=str(self.kms_port))
        wait_http(f"{self.kms_url}/healthz", k.dir / "kms-home/tls/ca.pem", kms_proc)
        k.run(KMS_IDENTITY, env)
        self.identity = (k.dir / "kms-identity.txt").read_text().strip()
        assert redis_proc.poll() is None, r.logs()

        # The model owner's plaintext archive, encrypted against the KMS with its admin token.
        write_tiny(k.dir)
        k.run(ENCRYPT, kms_url=self.kms_url)
        for host in (f, w):
            host.copy_from(k, "kms-home/tls/ca.pem", "kms-ca.pem")  # the certificate only
            host.copy_from(k, "kms-identity.txt", "kms-identity.txt")  # public
            host.copy_from(k, "tiny-1.enc.tsm", "models/tiny-1.tsm")
        self.client.copy_from(k, "release-policy.yaml", "release-policy.yaml")

        trust = {"kms_url": self.kms_url}
        fe = f.start(
            SERVE,
            bind=self.bind,
            port=str(self.port),
            management_port=str(self.management_port),
            metrics_port=str(self.metrics_port),
            broker=_broker_url("frontend", "localhost", self.redis_port),
            **trust,
        )
        self.worker_proc = w.start(
            WORKER, broker=_broker_url("worker", "localhost", self.redis_port), **trust
        )
        wait_http(f"{self.frontend_url}/v2/models/tiny/ready", f.dir / "home/tls/ca.pem", fe, 180)
        self.client.copy_from(f, "home/tls/ca.pem", "frontend-ca.pem")

    def add_worker_host(self) -> None:
        """Another worker host, configured by trustserve.yaml: its key goes into the release
        policy, the KMS restarts (keeping every key), and it serves."""
        k, f = self.kms, self.frontend
        w = Host("worker2", self.workers.dir.parent / "worker-host-2")
        self.extra.append(w)
        policy = json.loads((k.dir / "release-policy.yaml").read_text())
        policy["sim_platform_keys"].append(self.platform_key(w))
        (k.dir / "release-policy.yaml").write_text(json.dumps(policy))
        self.client.copy_from(k, "release-policy.yaml", "release-policy.yaml")
        k.stop()
        env = {KMS_ENV_NAME: "kms.key"}
        kms_proc = k.start(KMS_SERVE, env, bind=self.bind, kms_port=str(self.kms_port))
        wait_http(f"{self.kms_url}/healthz", k.dir / "kms-home/tls/ca.pem", kms_proc)
        k.run(KMS_IDENTITY, env)
        assert (k.dir / "kms-identity.txt").read_text().strip() == self.identity
        _give_broker_credentials(self.redis, w, "worker")
        w.copy_from(k, "kms-home/tls/ca.pem", "kms-ca.pem")
        w.copy_from(k, "kms-identity.txt", "kms-identity.txt")
        w.copy_from(k, "tiny-1.enc.tsm", "models/tiny-1.tsm")
        config = {
            "home": "home",  # the sim platform key the policy names is this home's
            "kms": {"url": self.kms_url, "ca": "kms-ca.pem", "identity": "kms-identity.txt"},
            "broker": {"url": _broker_url("worker", "localhost", self.redis_port)},
            "worker": {"per_model": 2},
        }
        (w.dir / "trustserve.yaml").write_text(json.dumps(config))
        self.worker_proc = w.start(WORKER_FROM_FILE)
        ready = f"{self.frontend_url}/v2/models/tiny/ready"
        wait_http(ready, f.dir / "home/tls/ca.pem", self.worker_proc, 180)
        # the first worker host is gone: an answer now comes from this one
        ca = str(self.client.dir / "frontend-ca.pem")
        assert _infer(self.frontend_url, ca, 7) == (200, [15.0] * 4), w.logs()
        deadline = time.monotonic() + 60
        while len(worker_pids(self.worker_proc.pid)) < 2:
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.2)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("hosts"))
    try:
        started = time.monotonic()
        d.up()
        print(f"several hosts up in {time.monotonic() - started:.1f} s")
        yield d
    except Exception:
        for host in d.all():
            print(host.name, host.logs())
        raise
    finally:
        for host in d.all():
            host.stop()


def test_the_frontend_never_holds_the_kms_secrets(deployment: Deployment) -> None:
    f = deployment.frontend.dir
    names = {p.name for p in f.rglob("*")}
    assert "admin.token" not in names and "kms.key" not in names and "state.json" not in names
    kms_ca_key = (deployment.kms.dir / "kms-home/tls/ca-key.pem").read_bytes()
    redis_ca_key = (deployment.redis.dir / "redis/tls/ca-key.pem").read_bytes()
    for p in f.rglob("*"):
        if p.is_file():
            assert p.read_bytes() not in (kms_ca_key, redis_ca_key), p


def test_ready_is_200_once_the_workers_are_up(deployment: Deployment) -> None:
    r = httpx.get(
        f"{deployment.frontend_url}/v2/health/ready",
        verify=str(deployment.client.dir / "frontend-ca.pem"),
    )
    assert r.status_code == 200, r.text


def test_unmodified_tritonclient_gets_correct_answers(deployment: Deployment) -> None:
    import tritonclient.http as triton

    ca = str(deployment.client.dir / "frontend-ca.pem")
    client = triton.InferenceServerClient(
        f"localhost:{deployment.port}", ssl=True, ssl_options={"ca_certs": ca}
    )
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = triton.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("tiny", [inp])
    y, s = tiny_expected(x)
    np.testing.assert_allclose(result.as_numpy("y"), y)
    np.testing.assert_allclose(result.as_numpy("s"), s)


@pytest.mark.parametrize("template", [PREDICT_SEALED, PREDICT_STANDARD])
def test_predict_cli_gets_correct_answers(deployment: Deployment, template: str) -> None:
    deployment.client.run(MAKE_X)  # the doc's own input: x.npy of shape (1, 4)
    x = np.ones((1, 4), dtype=np.float32)
    out = deployment.client.run(template, frontend_url=deployment.frontend_url)
    answer = json.loads(out[out.index("{") :])
    assert answer["y"] == tiny_expected(x)[0].tolist(), out
    assert answer["s"] == tiny_expected(x)[1].tolist(), out


def _infer(url: str, ca: str, i: int) -> tuple[int, list[float]]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [i] * 4}]}
    r = httpx.post(f"{url}/v2/models/tiny/infer", json=body, verify=ca, timeout=60)
    return r.status_code, r.json()["outputs"][0]["data"] if r.status_code == 200 else [r.text]


def test_the_frontend_counts_the_figures_of_workers_on_another_host(
    deployment: Deployment,
) -> None:
    """Worker figures ride back inside each authenticated answer over Redis: the frontend's
    /metrics counts the worker host's queue wait and batches, with no port open there."""

    def counts() -> dict[str, float]:
        url = f"https://127.0.0.1:{deployment.metrics_port}/metrics"
        page = httpx.get(url, verify=str(deployment.client.dir / "frontend-ca.pem")).text
        tiny = {"model": "tiny", "version": "1"}
        return {
            s.name: s.value
            for family in text_string_to_metric_families(page)
            for s in family.samples
            if s.labels == tiny
        }

    before = counts()
    ca = str(deployment.client.dir / "frontend-ca.pem")
    assert [_infer(deployment.frontend_url, ca, i)[0] for i in range(5)] == [200] * 5
    after = counts()
    for name in ("trustserve_queue_seconds_count", "trustserve_preprocess_seconds_count"):
        assert after[name] - before.get(name, 0) == 5, name
    assert after["trustserve_batch_size_count"] > before.get("trustserve_batch_size_count", 0)
    assert after["trustserve_workers"] == 0 and after["trustserve_workers_live"] >= 1


def test_kill_9_of_a_worker_child_under_load_loses_no_request(deployment: Deployment) -> None:
    assert deployment.worker_proc is not None
    deadline = time.monotonic() + 60
    children = worker_pids(deployment.worker_proc.pid)
    while len(children) < 2 and time.monotonic() < deadline:  # a killed child is restarted
        time.sleep(0.2)
        children = worker_pids(deployment.worker_proc.pid)
    assert len(children) == 2
    ca, n = str(deployment.client.dir / "frontend-ca.pem"), 200
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_infer, deployment.frontend_url, ca, i) for i in range(n)]
        while sum(f.done() for f in futures) < 20:
            time.sleep(0.01)
        os.kill(children[0], signal.SIGKILL)
        results = [f.result() for f in futures]
    failed = [(i, r) for i, r in enumerate(results) if r != (200, [2.0 * i + 1] * 4)]
    assert failed == [], failed[:5]
    print(
        f"{n} requests, one worker child killed: all answered in {time.monotonic() - started:.1f} s"
    )


def test_kill_9_of_the_worker_parent_leaves_no_process_behind(deployment: Deployment) -> None:
    proc = deployment.worker_proc
    assert proc is not None
    deadline = time.monotonic() + 60
    children = worker_pids(proc.pid)
    while len(children) < 2 and time.monotonic() < deadline:  # the killed child is restarted
        time.sleep(0.2)
        children = worker_pids(proc.pid)
    assert len(children) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in children if alive(p)] == []
    started = time.monotonic()
    deployment.add_worker_host()
    print(f"a worker host added (KMS restarted) and serving in {time.monotonic() - started:.1f} s")


ALL = [REDIS_CONFIG, REDIS_SERVER, PLATFORM_KEY, KEY_FILE, KMS_SERVE, KMS_IDENTITY, ENCRYPT,
       SERVE, WORKER, WORKER_FROM_FILE, MAKE_X, PREDICT_SEALED, PREDICT_STANDARD]  # fmt: skip


def test_the_doc_shows_the_commands_the_test_runs() -> None:
    """Every command template above (whichever tests ran before this one) is in the doc."""
    doc = hosts.doc_commands((ROOT / "docs" / "deploy.md").read_text())
    assert doc, "docs/deploy.md has no <!-- doctest: multihost --> blocks"
    assert set(hosts.RUN) <= set(ALL), "a command ran that the doc check does not know"
    missing = [t for t in ALL if not any(hosts.template_regex(t).match(line) for line in doc)]
    assert missing == [], f"commands the test runs that docs/deploy.md does not show: {missing}"


def test_the_doc_check_catches_a_drifted_command() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    drifted = hosts.doc_commands(
        doc.replace("--kms-ca kms-ca.pem --kms-identity", "--kms-identity")
    )
    assert not any(hosts.template_regex(WORKER).match(line) for line in drifted)


def test_every_variable_the_section_uses_is_defined_in_it() -> None:
    """A reader runs the blocks in a fresh shell: a ``$NAME`` the doc never sets (as
    ``$KMS_IDENTITY`` once was) expands to nothing. ``PATH`` and ``HOME`` are the shell's."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    section = doc[doc.index("## Several hosts without Kubernetes") :]
    section = section[: section.index("\n## ", 1)]
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.S))
    used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", blocks))
    defined = set(re.findall(r"(?:^|\s|export\s)([A-Za-z_][A-Za-z0-9_]*)=", blocks, flags=re.M))
    assert used - defined - {"PATH", "HOME"} == set(), "used in the doc, never set there"
    assert "x.npy" in blocks.split("trustserve predict")[0], "x.npy is used before it is made"
