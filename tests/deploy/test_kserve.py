"""deploy/kserve: trustserve as a KServe runtime, validated offline.

KServe's kinds (``ClusterServingRuntime``, ``ServingRuntime``, ``InferenceService``) are
validated with ``jsonschema`` against the ``openAPIV3Schema`` of KServe's own CRDs,
committed under deploy/kserve/schemas/ (source and commit in its README), read the way
the API server reads them: an unknown field is an error (strict field validation), and
``int32`` / ``int64`` integers are bounded. Built-in kinds, the runtime's pod (the
container and volumes KServe puts into the predictor's pod) and every object's metadata
are validated with ``kubernetes-validate`` for Kubernetes 1.30, strict, as in test_k8s.py.
Beyond the schemas: the runtime runs the CLI the way deploy/k8s runs the frontend, and
the InferenceService, the runtime and the NetworkPolicies fit together. Each check is
shown to refuse a broken manifest. No network, no cluster.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import k8s_checks as checks
from tests.deploy.conftest import KUBERNETES_VERSION
from trustserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "deploy" / "kserve"
SCHEMAS = KSERVE / "schemas"
FRONTEND = ROOT / "deploy" / "k8s" / "base" / "frontend.yaml"
KMS = ROOT / "deploy" / "k8s" / "base" / "kms.yaml"
KSERVE_COMMIT = "aaac4e294dae2c7b1aa1886447793f3aa1c30912"
# (apiVersion, kind) -> schema file
CRD_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "clusterservingruntime-v1alpha1.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
}
# KServe's InferenceServiceProtocol values (pkg/constants/constants.go at KSERVE_COMMIT);
# the CRD types protocolVersions only as strings, so the schema alone admits any
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# where KServe's storage initializer puts storageUri (DefaultModelLocalMountPath)
KSERVE_MODEL_DIR = "/mnt/models"
# the CoCo runtime classes of deploy/k8s and the evidence provider each one needs
COCO = {"kata-qemu-tdx": "tdx", "kata-qemu-snp": "sev-snp"}
INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
Obj = dict[str, Any]


# ---- the schemas, read as the API server reads them ----


def _as_api_server(node: Any) -> Any:
    """An OpenAPI v3 structural schema as plain JSON Schema with the API server's rules."""
    if isinstance(node, list):
        return [_as_api_server(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_api_server(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # strict: an unknown field is refused
    if out.get("type") == "integer" and out.get("format") in INT_BOUNDS:
        low, high = INT_BOUNDS[out["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    return out


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = _as_api_server(json.loads((SCHEMAS / CRD_SCHEMAS[api_version, kind]).read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(obj: Obj) -> list[str]:
    """What KServe's CRD schema refuses in ``obj`` (an empty list: nothing)."""
    found = validator(obj["apiVersion"], obj["kind"]).iter_errors(obj)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def validate(obj: Obj) -> None:
    """Every object: its metadata as Kubernetes ObjectMeta; a KServe kind against its CRD
    schema; any other kind by kubernetes-validate (an unknown kind is an error there)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        errors = schema_errors(obj)
        if errors:
            raise jsonschema.ValidationError("; ".join(errors))
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        kubernetes_validate.validate(meta, KUBERNETES_VERSION, strict=True)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# ---- the manifests ----


@functools.cache
def _manifests() -> tuple[tuple[str, Obj], ...]:
    found = []
    for path in sorted(KSERVE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return tuple(found)


def manifests() -> list[Obj]:
    """A private copy: tests may mutate it."""
    return copy.deepcopy([obj for _, obj in _manifests()])


def one(objs: list[Obj], kind: str) -> Obj:
    (obj,) = (o for o in objs if o["kind"] == kind)
    return obj


def runtime_container(objs: list[Obj]) -> Obj:
    (c,) = one(objs, "ClusterServingRuntime")["spec"]["containers"]
    return dict(c)


def predictor_pod(objs: list[Obj]) -> Obj:
    """The predictor's pod as KServe makes it: the runtime's container and volumes, the
    InferenceService's pod fields and container overrides, the model directory mounted."""
    runtime = one(objs, "ClusterServingRuntime")["spec"]
    predictor = one(objs, "InferenceService")["spec"]["predictor"]
    container = copy.deepcopy(runtime_container(objs))
    overrides = {e["name"]: e for e in predictor["model"].get("env", [])}
    container["env"] = [overrides.pop(e["name"], e) for e in container.get("env", [])]
    container["env"] += overrides.values()
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": "kserve-provision-location", "mountPath": KSERVE_MODEL_DIR, "readOnly": True},
    ]
    pod_fields = (
        "runtimeClassName",
        "securityContext",
        "automountServiceAccountToken",
        "enableServiceLinks",
    )
    spec = {k: predictor[k] for k in pod_fields if k in predictor}
    spec["containers"] = [container]
    spec["volumes"] = [
        *runtime.get("volumes", []),
        {"name": "kserve-provision-location", "emptyDir": {}},
    ]
    labels = predictor.get("labels", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "resnet50-predictor", "namespace": "trustserve", "labels": labels},
        "spec": spec,
    }


def cli_args(objs: list[Obj]) -> list[str]:
    (c,) = predictor_pod(objs)["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]


def frontend_container() -> Obj:
    deployment = one(list(yaml.safe_load_all(FRONTEND.read_text())), "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# ---- every object valid ----


def test_the_manifests_are_a_runtime_an_inference_service_and_network_policies() -> None:
    kinds = sorted(o["kind"] for o in manifests())
    assert kinds == ["ClusterServingRuntime", "InferenceService", "NetworkPolicy", "NetworkPolicy"]


@pytest.mark.parametrize("index", range(len(_manifests())))
def test_every_manifest_validates_against_its_schema(index: int) -> None:
    validate(manifests()[index])


def test_the_runtime_is_also_a_valid_namespaced_serving_runtime() -> None:
    """Without cluster-admin, the same spec as a ServingRuntime in the namespace."""
    runtime = one(manifests(), "ClusterServingRuntime")
    runtime["kind"] = "ServingRuntime"
    runtime["metadata"]["namespace"] = "trustserve"
    validate(runtime)


def test_the_runtime_pod_is_a_valid_kubernetes_pod() -> None:
    """The container and volumes KServe copies from the runtime into the predictor's pod,
    checked by Kubernetes' own Pod schema (strict), not only by KServe's copy of it."""
    kubernetes_validate.validate(predictor_pod(manifests()), KUBERNETES_VERSION, strict=True)


def test_the_kustomization_pins_the_image_by_digest() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization cannot be rendered here")
    out = subprocess.run(
        [kubectl, "kustomize", str(KSERVE)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted(o["kind"] for o in objs) == sorted(o["kind"] for o in manifests())
    for obj in objs:
        validate(obj)
    image = runtime_container(objs)["image"]
    assert checks.DIGEST.search(image) and image.startswith("registry.example/trustserve@")


def test_each_schema_names_its_kserve_source() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    assert KSERVE_COMMIT in readme and "Apache" in readme
    assert (SCHEMAS / "LICENSE.kserve").read_text().lstrip().startswith("Apache License")
    for (api_version, kind), name in CRD_SCHEMAS.items():
        comment = json.loads((SCHEMAS / name).read_text())["$comment"]
        assert kind in comment and api_version in comment and KSERVE_COMMIT in comment
        assert name in readme


# ---- the runtime runs trustserve as deploy/k8s does ----


def test_the_runtime_speaks_open_inference_protocol_v2_over_rest_and_grpc() -> None:
    runtime = one(manifests(), "ClusterServingRuntime")["spec"]
    assert set(runtime["protocolVersions"]) == {"v2", "grpc-v2"}
    assert set(runtime["protocolVersions"]) <= KSERVE_PROTOCOLS
    assert {"name": "onnx", "version": "1", "autoSelect": True, "priority": 1} in runtime[
        "supportedModelFormats"
    ]
    args = cli_args(manifests())
    ports = {p["name"]: p["containerPort"] for p in runtime_container(manifests())["ports"]}
    # KServe's raw Service sends its port 80 to the first container port: the REST one
    assert list(ports) == ["https", "grpc"]
    assert ports == {"https": int(_flag(args, "--port")), "grpc": int(_flag(args, "--grpc-port"))}


def test_the_runtime_args_are_accepted_by_the_real_cli() -> None:
    args = cli_args(manifests())
    parsed = build_parser().parse_args(args)
    assert args[0] == "serve"
    assert str(parsed.model_store) == KSERVE_MODEL_DIR
    assert parsed.host == "0.0.0.0" and not parsed.insecure_http and not parsed.dev
    assert parsed.broker is None and int(parsed.workers) >= 1  # workers in this pod
    assert parsed.attestation == "tdx" and parsed.kms_policy is not None


def test_the_runtime_reuses_the_frontend_image_kms_trust_tls_and_secrets() -> None:
    """Same image, KMS, KMS CA and trust policy path, TLS files, ports, user and
    restrictions as deploy/k8s's frontend: one set of Secrets and one image serve both."""
    ours, theirs = runtime_container(manifests()), frontend_container()
    assert ours["image"] == theirs["image"] == "trustserve"
    for flag in ("--kms", "--kms-ca", "--kms-policy", "--tls-cert", "--tls-key", "--home"):
        assert _flag(ours["args"], flag) == _flag(theirs["args"], flag), flag
    for flag in ("--port", "--grpc-port", "--host"):
        assert _flag(ours["args"], flag) == _flag(theirs["args"], flag), flag
    assert {p["name"]: p["containerPort"] for p in ours["ports"]} == {
        p["name"]: p["containerPort"] for p in theirs["ports"]
    }
    theirs_ctx = dict(theirs["securityContext"])
    assert {k: ours["securityContext"][k] for k in theirs_ctx} == theirs_ctx
    ours_mounts = {m["name"]: m["mountPath"] for m in ours["volumeMounts"]}
    theirs_mounts = {m["name"]: m["mountPath"] for m in theirs["volumeMounts"]}
    for name in ("home", "tmp", "tls", "ca", "kms-policy"):
        assert ours_mounts[name] == theirs_mounts[name], name
    runtime = one(manifests(), "ClusterServingRuntime")["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in runtime["volumes"] if "secret" in v}
    assert secrets == {"tls": "trustserve-frontend-tls", "ca": "trustserve-ca"}


def test_the_predictor_pod_keeps_the_deploy_k8s_invariants() -> None:
    objs = [predictor_pod(manifests())]
    assert checks.container_security_problems(objs) == []
    assert checks.resource_problems(objs) == []
    assert checks.kms_trust_problems(objs) == []
    assert checks.runtime_class_problems(objs, "kata-qemu-tdx") == []


def test_probes_ask_the_real_health_endpoints_over_https() -> None:
    c = runtime_container(manifests())
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        get = c[probe]["httpGet"]
        assert (get["path"], get["scheme"], ports[get["port"]]) == (path, "HTTPS", 8080)


# ---- the InferenceService, the runtime and the network fit together ----


def fit_problems(objs: list[Obj]) -> list[str]:
    """What KServe or the TEE would refuse that no schema says: the pairing of the
    InferenceService with the runtime, CoCo, and the NetworkPolicies' selectors."""
    problems = []
    runtime = one(objs, "ClusterServingRuntime")
    isvc = one(objs, "InferenceService")
    predictor, model = isvc["spec"]["predictor"], isvc["spec"]["predictor"]["model"]
    if model.get("runtime") != runtime["metadata"]["name"]:
        problems.append("the InferenceService does not name the trustserve runtime")
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    if model["modelFormat"]["name"] not in formats:
        problems.append(f"model format {model['modelFormat']['name']} is not the runtime's")
    for protocol in [model.get("protocolVersion", "v1"), *runtime["spec"]["protocolVersions"]]:
        if protocol not in KSERVE_PROTOCOLS:
            problems.append(f"protocol {protocol} is not one KServe knows")
    if model.get("protocolVersion", "v1") not in runtime["spec"]["protocolVersions"]:
        problems.append("the InferenceService asks for a protocol the runtime does not speak")
    if not model["storageUri"].endswith(".tsm"):
        problems.append("storageUri is not a trustserve archive (.tsm)")
    annotations = isvc["metadata"].get("annotations", {})
    if annotations.get("serving.kserve.io/deploymentMode") != "RawDeployment":
        problems.append("not a raw deployment: a proxy sidecar would sit in the pod")
    runtime_class = predictor.get("runtimeClassName")
    if runtime_class not in COCO:
        problems.append(f"runtime class {runtime_class} is not a Confidential Containers one")
    else:
        provider = cli_args(objs)[cli_args(objs).index("--provider") + 1]
        if provider != COCO[runtime_class]:
            problems.append(
                f"{runtime_class} needs --provider {COCO[runtime_class]}, not {provider}"
            )
    if isvc["metadata"].get("namespace") != "trustserve":
        problems.append("the InferenceService is not in the KMS's namespace")
    labels = predictor.get("labels", {})
    kms_labels = one(list(yaml.safe_load_all(KMS.read_text())), "StatefulSet")["spec"]["template"][
        "metadata"
    ]["labels"]
    for pol in (o for o in objs if o["kind"] == "NetworkPolicy"):
        spec = pol["spec"]
        selected = spec["podSelector"]["matchLabels"]
        if selected.items() <= labels.items():
            egress = [
                p["podSelector"]["matchLabels"] for r in spec["egress"] for p in r.get("to", [])
            ]
            if not any(sel.items() <= kms_labels.items() for sel in egress):
                problems.append(f"{pol['metadata']['name']} lets the predictor reach no KMS")
        elif selected.items() <= kms_labels.items():
            peers = [p["podSelector"]["matchLabels"] for r in spec["ingress"] for p in r["from"]]
            if not any(sel.items() <= labels.items() for sel in peers):
                problems.append(f"{pol['metadata']['name']} admits no predictor to the KMS")
        else:
            problems.append(f"{pol['metadata']['name']} selects neither predictor nor KMS")
    return problems


def test_the_inference_service_fits_the_runtime_coco_and_the_network() -> None:
    assert fit_problems(manifests()) == []


# ---- each check refuses a broken manifest ----


def _model(objs: list[Obj]) -> Obj:
    model: Obj = one(objs, "InferenceService")["spec"]["predictor"]["model"]
    return model


def _set_port(objs: list[Obj], value: Any) -> None:
    one(objs, "ClusterServingRuntime")["spec"]["containers"][0]["ports"][0]["containerPort"] = value


SCHEMA_BREAKS: dict[str, tuple[str, Callable[[list[Obj]], None]]] = {
    "port as a string": ("ClusterServingRuntime", lambda o: _set_port(o, "8080")),
    "port beyond int32": ("ClusterServingRuntime", lambda o: _set_port(o, 2**31)),
    "misspelt runtime field": (
        "ClusterServingRuntime",
        lambda o: one(o, "ClusterServingRuntime")["spec"].update(protocolVersion=["v2"]),
    ),
    "model format without a name": (
        "ClusterServingRuntime",
        lambda o: one(o, "ClusterServingRuntime")["spec"]["supportedModelFormats"][0].pop("name"),
    ),
    "autoSelect as a string": (
        "ClusterServingRuntime",
        lambda o: one(o, "ClusterServingRuntime")["spec"]["supportedModelFormats"][0].update(
            autoSelect="yes"
        ),
    ),
    "protocolVersions as a string": (
        "ClusterServingRuntime",
        lambda o: one(o, "ClusterServingRuntime")["spec"].update(protocolVersions="v2"),
    ),
    "storageUri as a list": (
        "InferenceService",
        lambda o: one(o, "InferenceService")["spec"]["predictor"]["model"].update(
            storageUri=["s3://a/b.tsm"]
        ),
    ),
    "unknown predictor field": (
        "InferenceService",
        lambda o: one(o, "InferenceService")["spec"]["predictor"].update(runtimeClass="kata"),
    ),
    "scale metric outside its enum": (
        "InferenceService",
        lambda o: one(o, "InferenceService")["spec"]["predictor"].update(scaleMetric="gpu"),
    ),
    "replicas as a string": (
        "InferenceService",
        lambda o: one(o, "InferenceService")["spec"]["predictor"].update(maxReplicas="4"),
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_BREAKS))
def test_the_schema_refuses_a_broken_manifest(case: str) -> None:
    kind, mutate = SCHEMA_BREAKS[case]
    objs = manifests()
    mutate(objs)
    assert schema_errors(one(objs, kind)) != []
    with pytest.raises(jsonschema.ValidationError):
        validate(one(objs, kind))


def test_the_runtime_pod_check_refuses_a_broken_container() -> None:
    objs = manifests()
    one(objs, "ClusterServingRuntime")["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(predictor_pod(objs), KUBERNETES_VERSION, strict=True)


def test_a_kind_without_a_schema_is_refused() -> None:
    objs = manifests()
    one(objs, "ClusterServingRuntime")["apiVersion"] = "serving.kserve.io/v1"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(one(objs, "ClusterServingRuntime"))


def test_an_unknown_protocol_version_passes_the_schema_but_not_the_fit_check() -> None:
    """KServe's CRD types protocolVersions as plain strings: only the check against
    KServe's protocol constants refuses "v3"."""
    objs = manifests()
    one(objs, "ClusterServingRuntime")["spec"]["protocolVersions"].append("v3")
    assert schema_errors(one(objs, "ClusterServingRuntime")) == []
    assert fit_problems(objs) == ["protocol v3 is not one KServe knows"]


def _predictor(objs: list[Obj]) -> Obj:
    predictor: Obj = one(objs, "InferenceService")["spec"]["predictor"]
    return predictor


# a mutation -> the problem it must cause
FIT_BREAKS: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "another runtime": (
        lambda o: _model(o).update(runtime="kserve-tritonserver"),
        "does not name the trustserve runtime",
    ),
    "another format": (
        lambda o: _model(o).update(modelFormat={"name": "sklearn"}),
        "model format sklearn",
    ),
    "protocol v1": (
        lambda o: _model(o).update(protocolVersion="v1"),
        "a protocol the runtime does not speak",
    ),
    "a plain onnx file": (
        lambda o: _model(o).update(storageUri="s3://models.example/m.onnx"),
        "not a trustserve archive",
    ),
    "serverless": (
        lambda o: one(o, "InferenceService")["metadata"].pop("annotations"),
        "not a raw deployment",
    ),
    "runc": (lambda o: _predictor(o).pop("runtimeClassName"), "not a Confidential Containers"),
    "snp with tdx evidence": (
        lambda o: _predictor(o).update(runtimeClassName="kata-qemu-snp"),
        "kata-qemu-snp needs --provider sev-snp",
    ),
    "another namespace": (
        lambda o: one(o, "InferenceService")["metadata"].update(namespace="x"),
        "not in the KMS's namespace",
    ),
    "predictor relabelled": (
        lambda o: _predictor(o).update(labels={"app": "resnet50"}),
        "admits no predictor to the KMS",
    ),
}


@pytest.mark.parametrize("case", sorted(FIT_BREAKS))
def test_the_fit_check_refuses_a_mismatch(case: str) -> None:
    mutate, expected = FIT_BREAKS[case]
    objs = manifests()
    mutate(objs)
    problems = fit_problems(objs)
    assert any(expected in p for p in problems), problems


def test_the_invariants_catch_a_weakened_runtime() -> None:
    objs = manifests()
    c = one(objs, "ClusterServingRuntime")["spec"]["containers"][0]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    i = c["args"].index("--kms-policy")
    del c["args"][i : i + 2]
    pod = [predictor_pod(objs)]
    assert checks.container_security_problems(pod) != []
    assert checks.kms_trust_problems(pod) != []
