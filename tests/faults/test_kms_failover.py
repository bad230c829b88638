"""A KMS replica's host dies under sealed load (``kill -9``) and nobody notices.

Every part is its own process with its own home: a 3-member etcd (the key state), three
``trustserve kms serve`` replicas, each on its own loopback address (127.0.0.2-4), a TLS
Redis, two frontends and two worker hosts, each given all three KMS URLs. 300 sealed
requests (the SDK's default mode: each client verifies the KMS's attestation bundle
through a frontend, then seals to the serving key) run while the replica every part
talks to first is killed; workers renew their serving keys every second and
clients keep fetching fresh bundles, so both paths cross the dead replica. Then, with
that replica still down, a new worker host with a fresh home gets its keys and serves.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.broker.redis_ha import wait_for
from tests.broker.redis_server import RedisServer
from tests.faults.load import start_worker, stop
from tests.kms.etcd_cluster import etcd_cluster, etcd_replica
from tests.kms.test_kms_etcd_serve import kms_serve
from tests.support import RunningStack, free_port, start_stack, write_tiny
from trustserve.attestation import Policy
from trustserve.attestation.sim_platform import platform_public_key
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.crypto.rootkey import create_key_file
from trustserve.encoding import b64
from trustserve.errors import TrustserveError
from trustserve.kms.tools import encrypt_model_file
from trustserve.tls import issue_local_ca

REPLICAS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MOVED = "moving to the KMS replica at"


@dataclass
class Deployment:
    root: Path
    archive: Path
    identity: str  # the KMS identity (base64) every part pins
    kms_urls: list[str]
    kms_ca: Path
    redis: RedisServer
    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def home(self, name: str) -> Path:
        """A part's home, made now so its sim platform key exists before any policy names it."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        platform_public_key(path)
        return path

    def kms_args(self) -> list[str]:
        return ["--kms", ",".join(self.kms_urls), "--kms-ca", str(self.kms_ca),
                "--kms-identity", self.identity]  # fmt: skip

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")


FRONTENDS, WORKERS, NEW_WORKER = (
    ("frontend-a", "frontend-b"),
    ("worker-a", "worker-b"),
    "worker-new",
)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, list[RunningStack]]]:
    key_file = tmp_path / "operator.key"  # the replicas still share the operator's secret
    create_key_file(key_file)
    with ExitStack() as running:
        etcd = running.enter_context(etcd_cluster(tmp_path / "etcd"))
        # the owner makes the key state in etcd and encrypts the model under it
        owner = etcd_replica(etcd, tmp_path / "owner", key_file)
        store = tmp_path / "store"
        store.mkdir()
        archive = write_tiny(store)
        encrypt_model_file(archive, archive, owner)
        identity = b64(owner.state.identity_public_key())
        tls = issue_local_ca(tmp_path / "kms-tls", list(REPLICAS))
        ports = [free_port() for _ in REPLICAS]
        d = Deployment(
            tmp_path, archive, identity,
            [f"https://{h}:{p}" for h, p in zip(REPLICAS, ports, strict=True)], tls.ca,
            RedisServer(tmp_path / "redis"),
        )  # fmt: skip
        # the release policy: sim evidence of the frontends' and worker hosts' homes only
        serving = [d.home(n) for n in (*FRONTENDS, *WORKERS, NEW_WORKER)]
        policy = tmp_path / "release-policy.yaml"
        keys = tuple(platform_public_key(h).hex() for h in serving)
        policy.write_text(
            json.dumps(replace(Policy.development(), sim_platform_keys=keys).to_json())
        )
        # the frontends' address gets the fresh-bundle budget of frontends (docs/kms.md):
        # both connect from 127.0.0.1, and one client's budget is less than two frontends use
        release = (
            "--policy",
            str(policy),
            "--provider",
            "sim",
            "--reserved-network",
            "127.0.0.1/32",
        )
        for i, (host, port) in enumerate(zip(REPLICAS, ports, strict=True)):
            home = d.home(f"kms{i}")
            replica = kms_serve(
                home, etcd.url(), port, tls.cert.parent, key_file, release, host=host
            )
            d.replicas.append(running.enter_context(replica))
        d.redis.start()
        running.callback(d.redis.stop)
        for name in WORKERS:
            d.workers[name] = start_worker(
                archive, d.redis.url(), d.home(name), tmp_path / f"{name}.log",
                *d.kms_args(), "--key-refresh", "1",
            )  # fmt: skip
            running.callback(stop, d.workers[name])
        frontends = []
        for name in FRONTENDS:
            frontends.append(start_stack(
                d.home(name), store, "--broker", d.redis.url(), "--workers", "0",
                "--timeout", "60", *d.kms_args(), dev=False, ready_timeout=180,
            ))  # fmt: skip
            running.callback(frontends[-1].stop)
        yield d, frontends


def client_policy(d: Deployment) -> ClientPolicy:
    """What a careful client of this deployment trusts: sim evidence of the three KMS
    homes, and a release policy admitting no more than the serving homes."""
    kms = replace(
        Policy.development(),
        sim_platform_keys=tuple(platform_public_key(d.root / f"kms{i}").hex() for i in range(3)),
    )
    serving = (*FRONTENDS, *WORKERS, NEW_WORKER)
    workers = replace(
        Policy.default(),
        allow_simulated=True,
        sim_platform_keys=tuple(platform_public_key(d.root / n).hex() for n in serving),
    )
    return ClientPolicy(kms, workers)


class SealedLoad:
    """``n`` sealed requests from two threads per frontend; each thread starts a new client
    (a new verified bundle, fresh from the KMS) every ``per_client`` requests. Every
    request carries its own row, and only the right answer to that row counts."""

    def __init__(self, frontends: list[RunningStack], policy: ClientPolicy, n: int) -> None:
        self.policy, self.n, self.per_client = policy, n, 10
        self.answered = 0
        self.failed: Counter[str] = Counter()
        self._next = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(f,)) for f in frontends for _ in (1, 2)
        ]

    def start(self) -> SealedLoad:
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "the load is still running"

    def _take(self) -> int | None:
        with self._lock:
            self._next += 1
            return self._next if self._next <= self.n else None

    def _run(self, frontend: RunningStack) -> None:
        while True:
            with TrustserveClient(frontend.url, policy=self.policy, ca=frontend.ca) as c:
                for _ in range(self.per_client):
                    if (i := self._take()) is None:
                        return
                    self._one(c, i)

    def _one(self, client: TrustserveClient, i: int) -> None:
        row = np.array([[i, i + 0.5, -i, 1.0]], np.float32)
        try:
            out = client.infer("tiny", {"x": row})
            right = np.array_equal(out["y"], 2 * row + 1) and np.array_equal(
                out["s"], row.sum(axis=1, keepdims=True)
            )
            what = "ok" if right else "wrong answer"
        except (TrustserveError, httpx.HTTPError) as exc:
            what = f"{type(exc).__name__}: {exc}"[:200]
        with self._lock:
            if what == "ok":
                self.answered += 1
            else:
                self.failed[what] += 1


def test_kill_9_of_a_kms_replica_under_sealed_load_fails_nothing(
    deployment: tuple[Deployment, list[RunningStack]],
) -> None:
    d, frontends = deployment
    policy = client_policy(d)
    load = SealedLoad(frontends, policy, 300).start()
    wait_for("60 sealed answers", lambda: load.answered >= 60 or load.failed, 120)
    first = d.replicas[0]  # the URL every client tries first: all of them use it now
    first.kill()
    first.wait()
    at_kill = load.answered
    load.wait(240)
    print(f"KMS replica {d.kms_urls[0]} killed after {at_kill} sealed answers: "
          f"{load.answered} of 300 answered, failed {dict(load.failed)}")  # fmt: skip
    assert not load.failed, f"answered {load.answered}, failed: {dict(load.failed)}"
    assert load.answered == 300
    # the dead replica was in use: each frontend (fresh bundles, which clients kept asking
    # for) and each worker (key renewals, every second) moved to the next one
    moved = f"{MOVED} {d.kms_urls[1]}"
    for f in frontends:
        assert moved in f.log.read_text(), f"{f.home.name} never moved off {d.kms_urls[0]}"
    for name in WORKERS:
        wait_for(f"{name} to renew its keys at {d.kms_urls[1]}", lambda n=name: moved in d.log(n))

    # with that replica still down, a new worker host (a fresh home) gets its keys; it
    # pins no identity but takes it from a bundle its --kms-policy admits (fetched from
    # the replicas, the dead one first)
    kms_policy = d.root / "kms-policy.yaml"
    kms_policy.write_text(json.dumps(policy.kms.to_json()))
    kms = [*d.kms_args()[:4], "--kms-policy", str(kms_policy)]
    new = start_worker(
        d.archive, d.redis.url(), d.root / NEW_WORKER, d.root / f"{NEW_WORKER}.log", *kms
    )
    try:
        wait_for(
            "the new worker to be ready (or to exit)",
            lambda: new.poll() is not None or " ready: " in d.log(NEW_WORKER),
            180,
        )
        assert new.poll() is None, d.log(NEW_WORKER)[-3000:]
        assert moved in d.log(NEW_WORKER)
        # ... and serves: the only worker left, it answers sealed requests
        for name in WORKERS:
            stop(d.workers[name])
        with TrustserveClient(frontends[1].url, policy=policy, ca=frontends[1].ca) as c:
            for i in range(5):
                row = np.array([[i, 2.0 * i, 3.0, -1.0]], np.float32)
                np.testing.assert_array_equal(c.infer("tiny", {"x": row})["y"], 2 * row + 1)
    finally:
        stop(new)
