"""deploy/k8s: every overlay rendered by ``kubectl kustomize``, validated and checked.

Objects are validated with ``kubernetes-validate`` (offline OpenAPI schemas, strict: an
unknown field is an error) for Kubernetes 1.30. KEDA's ScaledObject and
TriggerAuthentication are CRDs without a shipped schema: their fields are checked
here against KEDA's documented redis-streams scaler and against the broker's real
stream and group names. Each security check is also shown to catch a mutated object.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.deploy import k8s_checks as checks
from tests.deploy.conftest import KUBERNETES_VERSION
from trustserve.attestation.registry import PROVIDERS
from trustserve.broker.base import queue_name
from trustserve.broker.redis_streams import GROUP, Keys
from trustserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

RUNTIME_CLASS = {"coco-tdx": "kata-qemu-tdx", "coco-snp": "kata-qemu-snp"}
ATTESTATION = {"dev": "sim", "coco-tdx": "tdx", "coco-snp": "sev-snp", "sgx": "sgx"}
OVERLAYS = sorted(ATTESTATION)
TEE_OVERLAYS = ["coco-snp", "coco-tdx", "sgx"]
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# KEDA's redis-streams trigger metadata (keda.sh/docs/scalers/redis-streams)
KEDA_REDIS_STREAMS_KEYS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
}  # fmt: skip
KEDA_AUTH_PARAMETERS = {"username", "password", "tls", "ca", "cert", "key", "keyPassword"}
Obj = dict[str, Any]


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl (with kustomize) is needed to render deploy/k8s")
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    return found


@functools.cache
def _render(overlay: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(overlay: str) -> list[Obj]:
    """A private copy: tests may mutate it."""
    return copy.deepcopy(list(_render(overlay)))


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"].startswith(name):
            return obj
    raise KeyError(f"{kind}/{name}")


def target(objs: list[Obj]) -> dict[str, str]:
    return dict(find(objs, "ConfigMap", "trustserve-target")["data"])


def trustserve_containers(objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    return [
        (obj, c)
        for obj, spec in checks.workloads(objs)
        for c in spec["containers"]
        if "trustserve" in c["image"].rsplit("/", 1)[-1]
    ]


# ---- every object valid ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_kubernetes(overlay: str) -> None:
    objs = render(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"StatefulSet", "Deployment", "Service", "NetworkPolicy"} <= kinds
    assert {"PodDisruptionBudget", "PersistentVolumeClaim", "ScaledObject"} <= kinds
    for obj in objs:
        if obj["kind"] in KEDA_KINDS:
            continue  # a CRD: checked field by field below
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The schema check is strict: a typo in a field name does not slip through."""
    frontend = find(render("dev"), "Deployment", "trustserve-frontend")
    frontend["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(frontend, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_workers_on_their_real_queue(overlay: str) -> None:
    objs = render(overlay)
    scaled = find(objs, "ScaledObject", "trustserve-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert find(objs, "Deployment", spec["scaleTargetRef"]["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert set(meta) <= KEDA_REDIS_STREAMS_KEYS, set(meta) - KEDA_REDIS_STREAMS_KEYS
    # the broker's real names: stream of the worker's model version, group "workers"
    assert meta["consumerGroup"] == GROUP
    assert meta["stream"] == Keys("trustserve").stream(queue_name("resnet50", "int8"))
    assert int(meta["lagCount"]) > 0 and "pendingEntriesCount" not in meta
    worker = find(objs, "Deployment", "trustserve-worker")
    env = {
        e["name"]: e.get("value")
        for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRUSTSERVE_ARCHIVE"].endswith("/resnet50.tsm")
    host, _, port = meta["address"].partition(":")
    redis = find(objs, "Service", "trustserve-redis")
    assert host == f"trustserve-redis.{redis['metadata']['namespace']}.svc.cluster.local"
    assert int(port) in {p["port"] for p in redis["spec"]["ports"]}
    auth = find(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    assert params <= KEDA_AUTH_PARAMETERS and {"username", "password", "tls", "ca"} <= params
    assert "unsafeSsl" not in meta and "enableTLS" not in meta  # TLS verified, via the auth


# ---- what runs where ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_names_its_attestation_provider(overlay: str) -> None:
    value = target(render(overlay))["attestation"]
    assert value == ATTESTATION[overlay] and value in PROVIDERS


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


@pytest.mark.parametrize("overlay", ["dev", "coco-tdx", "coco-snp"])
def test_container_args_are_accepted_by_the_real_cli(overlay: str) -> None:
    """The manifests drive the trustserve CLI as it is: an unknown flag fails here."""
    objs = render(overlay)
    seen = set()
    for _, c in trustserve_containers(objs):
        env = {
            e["name"]: e["value"]
            if "value" in e
            else target(objs)[e["valueFrom"]["configMapKeyRef"]["key"]]
            for e in c.get("env", [])
            if "fieldRef" not in e.get("valueFrom", {})  # the pod's name: not in the args
        }
        args = [_expand(a, env) for a in c["args"]]
        parsed = build_parser().parse_args(args)
        seen.add(args[0])
        if hasattr(parsed, "attestation"):
            assert parsed.attestation == ATTESTATION[overlay]
            assert parsed.kms_ca is not None  # the KMS is checked against the deployment CA
            # each role logs in to Redis as its own ACL user, with only that role's rights
            assert urlsplit(parsed.broker).username == {"serve": "frontend"}.get(args[0], args[0])
        if args[0] == "kms":
            assert parsed.provider == ATTESTATION[overlay] and parsed.policy is not None
            # TDX quotes need DCAP collateral, from the KMS's side (a PCCS), never the evidence
            assert (parsed.pccs_url is not None) == (overlay == "coco-tdx")
    assert seen == {"serve", "worker", "kms"}


@pytest.mark.parametrize("overlay", sorted(RUNTIME_CLASS))
def test_coco_overlays_run_every_workload_in_their_runtime_class(overlay: str) -> None:
    assert checks.runtime_class_problems(render(overlay), RUNTIME_CLASS[overlay]) == []


def test_sgx_overlay_runs_frontend_worker_and_kms_as_gramine_enclaves() -> None:
    objs = render("sgx")
    found = set()
    for obj, c in trustserve_containers(objs):
        assert c["command"][0] == "gramine-sgx", checks.name(obj)
        assert not c.get("args"), "an enclave's argv is fixed in its signed manifest"
        limits = c["resources"]["limits"]
        assert {"sgx.intel.com/epc", "sgx.intel.com/enclave", "sgx.intel.com/provision"} <= set(
            limits
        )
        assert "trustserve-gramine@" in c["image"]
        found.add(c["command"][1].rsplit("-", 1)[-1])
    assert found == {"frontend", "worker", "kms"}


# ---- security invariants ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_and_without_capabilities(overlay: str) -> None:
    objs = render(overlay)
    assert checks.container_security_problems(objs) == []
    assert checks.resource_problems(objs) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_leads_to_the_management_or_metrics_port(overlay: str) -> None:
    assert checks.management_port_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", TEE_OVERLAYS)
def test_tee_overlays_pin_every_image_by_digest(overlay: str) -> None:
    assert checks.digest_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_is_reachable_only_from_frontends_and_workers(overlay: str) -> None:
    assert checks.redis_reachability_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_frontend_is_exposed(overlay: str) -> None:
    objs = render(overlay)
    exposed = [
        s["metadata"]["name"]
        for s in objs
        if s["kind"] == "Service" and s["spec"].get("type", "ClusterIP") != "ClusterIP"
    ]
    assert exposed == ["trustserve-frontend"]
    open_to_all = [
        p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        for p in objs
        if p["kind"] == "NetworkPolicy"
        for rule in p["spec"].get("ingress", [])
        if not rule.get("from")
    ]
    assert open_to_all == ["frontend"]
    deny = find(objs, "NetworkPolicy", "trustserve-default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_no_secret_values_are_committed() -> None:
    assert checks.committed_secret_problems(ROOT / "deploy") == []
    for overlay in OVERLAYS:
        assert all(o["kind"] != "Secret" for o in render(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kms_client_says_which_kms_it_trusts(overlay: str) -> None:
    """A frontend or worker with --kms refuses to start unless it trusts the KMS identity."""
    objs = render(overlay)
    assert checks.kms_trust_problems(objs) == []
    if overlay == "sgx":
        return  # the enclaves' argv (with --kms-policy) is in their signed manifests
    config = find(objs, "ConfigMap", "trustserve-kms-trust")
    policy = yaml.safe_load(config["data"]["policy.yaml"])
    for obj, c in trustserve_containers(objs):
        if "--kms" not in c["args"]:
            continue
        # by attestation, under a policy the overlay ships; nothing copied from the running KMS
        path = c["args"][c["args"].index("--kms-policy") + 1]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in checks.pod_spec(obj)["volumes"]}  # type: ignore[index]
        volume = volumes[mounts[str(Path(path).parent)]]
        assert volume["configMap"]["name"] == config["metadata"]["name"], checks.name(obj)
    # simulated KMS evidence is trusted in the dev overlay only
    assert policy["allow_simulated"] is (overlay == "dev")
    if overlay != "dev":
        assert policy["measurements"] == []  # placeholder: trusts no KMS until written


def _drop_kms_trust(objs: list[Obj]) -> None:
    c = find(objs, "Deployment", "trustserve-worker")["spec"]["template"]["spec"]["containers"][0]
    i = c["args"].index("--kms-policy")
    del c["args"][i : i + 2]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_real_health_endpoints_over_https(overlay: str) -> None:
    objs = render(overlay)
    expected = {
        "trustserve-frontend": ("/v2/health/ready", "/v2/health/live", 8080),
        "trustserve-kms": ("/healthz", "/healthz", 8443),
    }
    for name, (ready, live, port) in expected.items():
        kind = "StatefulSet" if name == "trustserve-kms" else "Deployment"
        (c,) = find(objs, kind, name)["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("readinessProbe", ready), ("livenessProbe", live)):
            get = c[probe]["httpGet"]
            assert (get["path"], get["scheme"], ports[get["port"]]) == (path, "HTTPS", port)


# ---- each check can fail ----


def _frontend_ctx(objs: list[Obj]) -> Obj:
    spec = find(objs, "Deployment", "trustserve-frontend")["spec"]["template"]["spec"]
    return dict(spec["containers"][0]["securityContext"])


def _set_ctx(objs: list[Obj], **changes: Any) -> None:
    spec = find(objs, "Deployment", "trustserve-frontend")["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"].update(changes)


def _no_runtime_class(objs: list[Obj]) -> None:
    del find(objs, "Deployment", "trustserve-worker")["spec"]["template"]["spec"][
        "runtimeClassName"
    ]


def _expose_management(objs: list[Obj]) -> None:
    svc = find(objs, "Service", "trustserve-frontend")
    svc["spec"]["ports"].append({"name": "mgmt", "port": 8081, "targetPort": 8081})


def _expose_metrics_by_name(objs: list[Obj]) -> None:
    (c,) = find(objs, "Deployment", "trustserve-frontend")["spec"]["template"]["spec"]["containers"]
    c["ports"].append({"name": "metrics", "containerPort": 8082})
    find(objs, "Service", "trustserve-kms")["spec"]["ports"][0]["targetPort"] = "metrics"


def _tag_image(objs: list[Obj]) -> None:
    spec = find(objs, "Deployment", "trustserve-worker")["spec"]["template"]["spec"]
    spec["containers"][0]["image"] = "registry.example/trustserve:latest"


def _open_redis(objs: list[Obj]) -> None:
    find(objs, "NetworkPolicy", "trustserve-redis")["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "kms"}}}
    )


def _redis_from_anywhere(objs: list[Obj]) -> None:
    objs.append(
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        }
    )


MUTATIONS: dict[str, tuple[str, Callable[[list[Obj]], Any], Callable[[list[Obj]], None]]] = {
    "root user": ("dev", checks.container_security_problems, lambda o: _set_ctx(o, runAsUser=0)),
    "writable root": (
        "dev",
        checks.container_security_problems,
        lambda o: _set_ctx(o, readOnlyRootFilesystem=False),
    ),
    "escalation": (
        "dev",
        checks.container_security_problems,
        lambda o: _set_ctx(o, allowPrivilegeEscalation=True),
    ),
    "capabilities": (
        "dev",
        checks.container_security_problems,
        lambda o: _set_ctx(o, capabilities={"drop": ["ALL"], "add": ["NET_ADMIN"]}),
    ),
    "no seccomp": (
        "coco-tdx",
        checks.container_security_problems,
        lambda o: find(o, "StatefulSet", "trustserve-kms")["spec"]["template"]["spec"][
            "securityContext"
        ].pop("seccompProfile"),
    ),
    "no limits": (
        "dev",
        checks.resource_problems,
        lambda o: find(o, "StatefulSet", "trustserve-kms")["spec"]["template"]["spec"][
            "containers"
        ][0]["resources"].pop("limits"),
    ),
    "no runtime class": (
        "coco-tdx",
        lambda o: checks.runtime_class_problems(o, "kata-qemu-tdx"),
        _no_runtime_class,
    ),
    "management in a service": ("dev", checks.management_port_problems, _expose_management),
    "metrics by port name": ("dev", checks.management_port_problems, _expose_metrics_by_name),
    "image by tag": ("coco-snp", checks.digest_problems, _tag_image),
    "redis open to the kms": ("dev", checks.redis_reachability_problems, _open_redis),
    "kms trusted on no grounds": ("coco-tdx", checks.kms_trust_problems, _drop_kms_trust),
    "redis open to all": ("sgx", checks.redis_reachability_problems, _redis_from_anywhere),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_each_check_catches_a_mutated_object(case: str) -> None:
    overlay, check, mutate = MUTATIONS[case]
    objs = render(overlay)
    assert check(objs) == []
    mutate(objs)
    assert check(objs), f"{case}: not caught"


def test_the_committed_secret_check_finds_a_secret_with_values(tmp_path: Path) -> None:
    (tmp_path / "oops.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {password: hunter2}\n"
    )
    (tmp_path / "fine.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: y}\n")
    assert checks.committed_secret_problems(tmp_path) == [
        f"{tmp_path / 'oops.yaml'} holds Secret values"
    ]
