"""deploy/k8s without a single point of failure: what a user relies on, in every overlay.

Three KMS replicas on three nodes, their state in a 3-member etcd, Redis as a primary, a
replica and three Sentinels; two of three of each kept through drains; frontends and
workers given every KMS replica and every Sentinel; the CoCo overlays keep the KMS in the
TEE and the ciphertext-only stores outside it. The pods' start scripts (which pick a
replica's part by its ordinal) are run here with stand-ins for the programs they start,
and what they would start is parsed by the real CLI. Each check is also shown to catch a
mutated object.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.deploy import k8s_checks as checks
from tests.deploy.test_k8s import OVERLAYS, RUNTIME_CLASS, find, render, target
from trustserve.broker.redis_config import parse_redis_url
from trustserve.cli import build_parser
from trustserve.stack.redis_ha import SERVICE

Obj = dict[str, Any]
HA_OVERLAYS = ["coco-snp", "coco-tdx", "dev"]  # sgx: one KMS replica (its manifest fixes argv)
CLUSTER = "trustserve.svc.cluster.local"
# the stand-in a start script finds on PATH: records its argv and environment, exits 0
STAND_IN = f"""#!{sys.executable}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}))
"""


def container(objs: list[Obj], name: str) -> Obj:
    (c,) = find(objs, "StatefulSet", name)["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(objs: list[Obj], c: Obj) -> dict[str, str]:
    values = target(objs)
    return {
        e["name"]: values[e["valueFrom"]["configMapKeyRef"]["key"]]
        if "valueFrom" in e
        else e["value"]
        for e in c.get("env", [])
        if "value" in e or "configMapKeyRef" in e.get("valueFrom", {})
    }


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of a container's command and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def run_start_script(
    c: Obj, tmp_path: Path, pod: str, env: dict[str, str], programs: tuple[str, ...]
) -> dict[str, Any]:
    """The container's ``command`` + ``args`` as the kubelet runs them, with ``programs``
    replaced by the stand-in; what the stand-in was started with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for program in programs:
        (bin_dir / program).write_text(STAND_IN)
        (bin_dir / program).chmod(0o755)
    argv = [expand(a, env) for a in (*c["command"], *c.get("args", []))]
    out = subprocess.run(
        argv,
        env={**env, "POD_NAME": pod, "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    started: dict[str, Any] = json.loads(out.stdout)
    return started


# ---- replicas, nodes, budgets ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_stateful_part_is_replicated_across_nodes_and_kept_through_drains(
    overlay: str,
) -> None:
    objs = render(overlay)
    assert checks.replication_problems(objs, "redis", 2, 1) == []
    assert checks.replication_problems(objs, "redis-sentinel", 3, 2) == []
    if overlay == "sgx":
        # the KMS enclave's argv (its signed manifest) takes no --state/--join yet
        assert checks.replication_problems(objs, "kms", 1, 1) == []
        assert not [o for o in objs if "etcd" in o["metadata"]["name"]]
        return
    assert checks.replication_problems(objs, "kms", 3, 2) == []
    assert checks.replication_problems(objs, "etcd", 3, 2) == []
    # etcd members start together (no member is ready before a quorum); KMS replicas in
    # order, so that trustserve-kms-0 serves before the others join it
    assert find(objs, "StatefulSet", "trustserve-etcd")["spec"]["podManagementPolicy"] == "Parallel"
    kms = find(objs, "StatefulSet", "trustserve-kms")["spec"]
    assert kms["podManagementPolicy"] == "OrderedReady"
    for service in ("trustserve-kms-pods", "trustserve-etcd-pods", "trustserve-redis-pods"):
        assert find(objs, "Service", service)["spec"]["clusterIP"] == "None"
    assert kms["serviceName"] == "trustserve-kms-pods"


@pytest.mark.parametrize("overlay", HA_OVERLAYS)
def test_frontends_and_workers_are_given_every_kms_replica_and_every_sentinel(
    overlay: str, tmp_path: Path
) -> None:
    objs = render(overlay)
    assert checks.kms_client_problems(objs) == []
    for name in ("ca.crt", "tls.crt", "tls.key", "password"):
        (tmp_path / name).write_text("not-used-here")
    sentinels = {
        f"{urlsplit(u).hostname}.{CLUSTER}"
        for u in checks.pod_urls(objs, "redis-sentinel", "rediss", "sentinel")
    }
    assert len(sentinels) == 3
    for role in ("frontend", "worker"):
        url = target(objs)[f"broker_url_{role}"]
        (password,) = parse_qs(urlsplit(url).query)["password_file"]
        # the broker's own parser (which reads the files: stand-ins where the pod has them)
        config = parse_redis_url(url.replace(str(Path(password).parent), str(tmp_path)))
        assert config.service == SERVICE and config.username == role and config.tls
        assert {h for h, _ in config.sentinels} == sentinels
        assert {p for _, p in config.sentinels} == {26380}


@pytest.mark.parametrize("overlay", HA_OVERLAYS)
def test_the_kms_replicas_keep_their_state_in_every_etcd_member_over_mutual_tls(
    overlay: str,
) -> None:
    objs = render(overlay)
    state = env_of(objs, container(objs, "trustserve-kms"))["TRUSTSERVE_KMS_STATE"]
    parts = urlsplit(state)
    assert parts.scheme == "etcd+https"
    members = {f"https://{h}" for h in parts.netloc.split(",")}
    assert members == {
        f"https://{urlsplit(u).hostname}.{CLUSTER}:{urlsplit(u).port}"
        for u in checks.pod_urls(objs, "etcd", "https", "client")
    }
    files = {k: v[0] for k, v in parse_qs(parts.query).items()}
    mounts = checks.secret_mounts(objs, "trustserve-kms")
    for key in ("ca", "cert", "key"):
        assert mounts[str(Path(files[key]).parent)] == "trustserve-etcd-client", key
    # every etcd member requires client certificates, from clients and from its peers
    (etcd,) = find(objs, "StatefulSet", "trustserve-etcd")["spec"]["template"]["spec"]["containers"]
    assert {"--client-cert-auth", "--peer-client-cert-auth"} <= set(etcd["args"])
    assert all(u.startswith("--") and "http://0.0.0.0:2379" not in u for u in etcd["args"])


# ---- the start scripts ----


def _kms_started(objs: list[Obj], tmp_path: Path, ordinal: int, key: bool) -> dict[str, Any]:
    c = container(objs, "trustserve-kms")
    env = env_of(objs, c)
    key_file = tmp_path / f"root-key-{ordinal}-{key}"
    if key:
        key_file.write_bytes(os.urandom(32))
    env["TRUSTSERVE_KMS_KEY_FILE"] = str(key_file)
    return run_start_script(c, tmp_path, f"trustserve-kms-{ordinal}", env, ("trustserve",))


@pytest.mark.parametrize("overlay", HA_OVERLAYS)
def test_kms_0_opens_the_root_key_and_the_other_replicas_join_by_attestation(
    overlay: str, tmp_path: Path
) -> None:
    objs = render(overlay)
    c = container(objs, "trustserve-kms")
    env = env_of(objs, c)
    args = [expand(a, env) for a in c["args"]]
    replicas = checks.pod_urls(objs, "kms", "https", "https")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {
        v["name"]: v
        for v in find(objs, "StatefulSet", "trustserve-kms")["spec"]["template"]["spec"]["volumes"]
    }

    # every replica may be joined (and may join): a peer's evidence must meet the KMS trust
    # policy the frontends and workers use, its TLS certificate come from the deployment CA
    parsed = build_parser().parse_args(args)
    policy = volumes[mounts[str(parsed.peer_policy.parent)]]
    assert policy["configMap"]["name"].startswith("trustserve-kms-trust-")
    assert parsed.peer_policy.name == "policy.yaml"
    assert volumes[mounts[str(parsed.peer_ca.parent)]]["secret"]["secretName"] == "trustserve-ca"

    first = _kms_started(objs, tmp_path, 0, key=True)
    assert first["argv"] == args  # the operator secret, no --join
    assert first["env"]["TRUSTSERVE_KMS_KEY_FILE"]
    for ordinal, key in ((1, True), (2, False), (0, False)):
        started = _kms_started(objs, tmp_path, ordinal, key)
        # the other replicas, never itself; and no operator secret in its environment
        others = ",".join(u for n, u in enumerate(replicas) if n != ordinal)
        assert started["argv"] == [*args, "--join", others]
        assert "TRUSTSERVE_KMS_KEY_FILE" not in started["env"]
        joining = build_parser().parse_args(started["argv"])  # the CLI as it is
        assert joining.join == others and joining.state == parsed.state


@pytest.mark.parametrize("overlay", HA_OVERLAYS)
def test_redis_servers_start_as_primary_and_replica_and_keep_their_role(
    overlay: str, tmp_path: Path
) -> None:
    objs = render(overlay)
    c = container(objs, "trustserve-redis")
    monitor = _sentinel_conf(objs).split("sentinel monitor ", 1)[1].split("\n", 1)[0]
    service, primary, port, quorum = monitor.split()
    assert (service, primary, port, int(quorum)) == (
        SERVICE,
        f"trustserve-redis-0.trustserve-redis-pods.{CLUSTER}",
        "6380",
        2,
    )
    for ordinal in (0, 1):
        data = tmp_path / f"data-{ordinal}"
        script = [*c["command"][:2], c["command"][2].replace("/data", str(data)), *c["command"][3:]]
        started = run_start_script(
            {**c, "command": script}, tmp_path, f"trustserve-redis-{ordinal}", {}, ("redis-server",)
        )
        (conf,) = started["argv"]
        lines = Path(conf).read_text().splitlines()
        assert lines[:2] == [
            "include /etc/redis/conf/redis.conf",
            "include /etc/redis/replication/masterauth.conf",
        ]
        assert (
            f"replica-announce-ip trustserve-redis-{ordinal}.trustserve-redis-pods.{CLUSTER}"
            in lines
        )
        assert (f"replicaof {primary} {port}" in lines) == (ordinal == 1)
        assert oct(Path(conf).stat().st_mode & 0o777) == "0o600"
        # Redis rewrites its file when the Sentinels change its role: a restart keeps it
        Path(conf).write_text("include /etc/redis/conf/redis.conf\nreplicaof other 6380\n")
        again = run_start_script(
            {**c, "command": script}, tmp_path, f"trustserve-redis-{ordinal}", {}, ("redis-server",)
        )
        assert again["argv"] == [conf] and "replicaof other 6380" in Path(conf).read_text()


def _sentinel_conf(objs: list[Obj]) -> str:
    return str(find(objs, "ConfigMap", "trustserve-redis-config")["data"]["sentinel.conf"])


@pytest.mark.parametrize("overlay", HA_OVERLAYS)
def test_each_sentinel_announces_its_own_name(overlay: str, tmp_path: Path) -> None:
    objs = render(overlay)
    c = container(objs, "trustserve-redis-sentinel")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "/etc/redis/sentinel" in mounts and "/etc/redis/conf" in mounts
    for ordinal in range(3):
        root = tmp_path / str(ordinal)
        (root / "etc/redis/conf").mkdir(parents=True)
        (root / "etc/redis/sentinel").mkdir(parents=True)
        (root / "data").mkdir()
        (root / "etc/redis/conf/sentinel.conf").write_text(_sentinel_conf(objs))
        (root / "etc/redis/sentinel/auth.conf").write_text("sentinel sentinel-user peer\n")
        script = c["command"][2]
        for path in ("/data", "/etc/redis/conf", "/etc/redis/sentinel"):
            script = script.replace(path, f"{root}{path}")
        started = run_start_script(
            {**c, "command": [*c["command"][:2], script]},
            root,
            f"trustserve-redis-sentinel-{ordinal}",
            {},
            ("redis-server",),
        )
        conf, mode = started["argv"]
        assert mode == "--sentinel"
        text = Path(conf).read_text()
        assert text.index("sentinel monitor") < text.index("sentinel sentinel-user peer")
        me = f"trustserve-redis-sentinel-{ordinal}.trustserve-redis-sentinel.{CLUSTER}"
        assert text.endswith(f"sentinel announce-ip {me}\n")


# ---- inside and outside the TEE ----


@pytest.mark.parametrize("overlay", sorted(RUNTIME_CLASS))
def test_coco_keeps_the_kms_in_the_tee_and_the_ciphertext_stores_outside(overlay: str) -> None:
    objs = render(overlay)
    runtime = {
        checks.pod_labels(o)["app.kubernetes.io/component"]: spec.get("runtimeClassName")
        for o, spec in checks.workloads(objs)
    }
    assert runtime == {
        "kms": RUNTIME_CLASS[overlay],
        "frontend": RUNTIME_CLASS[overlay],
        "worker": RUNTIME_CLASS[overlay],
        "etcd": None,
        "redis": None,
        "redis-sentinel": None,
    }
    # and the overlay says why, where an operator reads it
    text = (
        Path(checks.__file__).parents[2] / "deploy/k8s/overlays" / overlay / "kustomization.yaml"
    ).read_text()
    assert "OUTSIDE the TEE" in text and "ciphertext only" in text


# ---- each check can fail ----


def _spec(objs: list[Obj], name: str) -> Obj:
    spec: Obj = find(objs, "StatefulSet", name)["spec"]
    return spec


def _one_kms_url_fewer(objs: list[Obj]) -> None:
    (c,) = find(objs, "Deployment", "trustserve-worker")["spec"]["template"]["spec"]["containers"]
    i = c["args"].index("--kms") + 1
    c["args"][i] = c["args"][i].rsplit(",", 1)[0]


def _budget(objs: list[Obj], name: str, value: int) -> None:
    find(objs, "PodDisruptionBudget", name)["spec"]["minAvailable"] = value


MUTATIONS: dict[str, tuple[Callable[[list[Obj]], list[str]], Callable[[list[Obj]], None]]] = {
    "two kms replicas": (
        lambda o: checks.replication_problems(o, "kms", 3, 2),
        lambda o: _spec(o, "trustserve-kms").update(replicas=2),
    ),
    "kms anti-affinity only preferred": (
        lambda o: checks.replication_problems(o, "kms", 3, 2),
        lambda o: _spec(o, "trustserve-kms")["template"]["spec"]["affinity"][
            "podAntiAffinity"
        ].update(
            preferredDuringSchedulingIgnoredDuringExecution=[],
            requiredDuringSchedulingIgnoredDuringExecution=[],
        ),
    ),
    "etcd anti-affinity by zone": (
        lambda o: checks.replication_problems(o, "etcd", 3, 2),
        lambda o: _spec(o, "trustserve-etcd")["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ][0].update(topologyKey="topology.kubernetes.io/zone"),
    ),
    "kms budget of one": (
        lambda o: checks.replication_problems(o, "kms", 3, 2),
        lambda o: _budget(o, "trustserve-kms", 1),
    ),
    "no etcd budget": (
        lambda o: checks.replication_problems(o, "etcd", 3, 2),
        lambda o: o.remove(find(o, "PodDisruptionBudget", "trustserve-etcd")),
    ),
    "a worker missing a kms replica": (checks.kms_client_problems, _one_kms_url_fewer),
    "sentinels open to the kms": (
        checks.redis_reachability_problems,
        lambda o: find(o, "NetworkPolicy", "trustserve-redis-sentinel")["spec"]["ingress"][0][
            "from"
        ].append({"podSelector": {"matchLabels": {"app.kubernetes.io/component": "kms"}}}),
    ),
    "sentinels open to all": (
        checks.redis_reachability_problems,
        lambda o: find(o, "NetworkPolicy", "trustserve-redis-sentinel")["spec"]["ingress"].append(
            {"ports": [{"protocol": "TCP", "port": 26380}]}
        ),
    ),
    "kms outside the tee": (
        lambda o: checks.runtime_class_problems(o, "kata-qemu-tdx"),
        lambda o: _spec(o, "trustserve-kms")["template"]["spec"].pop("runtimeClassName"),
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_each_ha_check_catches_a_mutated_object(case: str) -> None:
    check, mutate = MUTATIONS[case]
    objs = render("coco-tdx")
    assert check(objs) == []
    mutate(objs)
    assert check(objs), f"{case}: not caught"
