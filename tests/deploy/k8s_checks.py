"""Security invariants of the rendered Kubernetes manifests, as functions returning problems.

Each check takes the objects ``kubectl kustomize`` rendered and returns a list of
human-readable problems (empty when the invariant holds), so a test can show both
that the shipped overlays pass and that a mutated object is caught.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod")
MANAGEMENT_PORTS = {8081: "management", 8082: "metrics"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
COMPONENT = "app.kubernetes.io/component"
# What may run outside the TEE in the CoCo overlays: parts that hold ciphertext only
# (docs/deploy.md, "High availability and recovery").
CIPHERTEXT_ONLY = frozenset({"etcd", "redis", "redis-sentinel"})
REDIS_COMPONENTS = ("redis", "redis-sentinel")
# Who may open a connection to Redis or its Sentinels: the broker's own clients, the
# servers and Sentinels among themselves (replication, monitoring), and KEDA's operator,
# which logs in as the read-only ``keda`` ACL user to read queue lag.
ALLOWED_REDIS_PEERS: list[Obj] = [
    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "trustserve", COMPONENT: component}}}
    for component in ("frontend", "worker", *REDIS_COMPONENTS)
] + [
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
        "podSelector": {"matchLabels": {"app": "keda-operator"}},
    }
]


def name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: Obj) -> Obj | None:
    kind = obj["kind"]
    if kind == "Pod":
        return dict(obj["spec"])
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    if kind in WORKLOAD_KINDS:
        return dict(obj["spec"]["template"]["spec"])
    return None


def pod_labels(obj: Obj) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return dict(obj["metadata"].get("labels", {}))
    return dict(obj["spec"]["template"]["metadata"].get("labels", {}))


def workloads(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for obj in objs:
        spec = pod_spec(obj)
        if spec is not None:
            yield obj, spec


def containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def kms_trust_problems(objs: list[Obj]) -> list[str]:
    """Every container that talks to a KMS says which KMS it trusts (docs/kms.md)."""
    return [
        f"{name(o)}/{c['name']} passes --kms without --kms-identity or --kms-policy"
        for o, spec in workloads(objs)
        for c in containers(spec)
        if "--kms" in _flags(c.get("args", []))
        and not {"--kms-identity", "--kms-policy"} & _flags(c.get("args", []))
    ]


def runtime_class_problems(objs: list[Obj], runtime_class: str) -> list[str]:
    """Every workload runs in the TEE's runtime class, except the ciphertext-only stores,
    which run outside it (the cluster's default runtime)."""
    problems = []
    for o, spec in workloads(objs):
        outside = pod_labels(o).get(COMPONENT) in CIPHERTEXT_ONLY
        if not outside and spec.get("runtimeClassName") != runtime_class:
            problems.append(f"{name(o)} runs without runtimeClassName {runtime_class}")
        if outside and "runtimeClassName" in spec:
            problems.append(
                f"{name(o)} holds ciphertext only but runs in {spec['runtimeClassName']}"
            )
    return problems


def container_security_problems(objs: list[Obj]) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, every capability dropped."""
    problems = []
    for obj, spec in workloads(objs):
        pod_ctx = spec.get("securityContext", {})
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{name(obj)} shares a host namespace")
        for c in containers(spec):
            ctx = c.get("securityContext", {})
            where = f"{name(obj)} container {c['name']}"
            non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
            user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            if non_root is not True or user == 0:
                problems.append(f"{where} may run as root")
            if ctx.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where} has a writable root filesystem")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where} allows privilege escalation")
            if ctx.get("privileged"):
                problems.append(f"{where} is privileged")
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where} runs without a seccomp profile")
            caps = ctx.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{where} keeps capabilities")
    return problems


def resource_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for obj, spec in workloads(objs):
        for c in containers(spec):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(kind, {}))
                if missing:
                    problems.append(f"{name(obj)} {c['name']}: no {kind} for {sorted(missing)}")
    return problems


def _named_ports(objs: list[Obj]) -> dict[str, set[int]]:
    ports: dict[str, set[int]] = {}
    for _, spec in workloads(objs):
        for c in containers(spec):
            for p in c.get("ports", []):
                if "name" in p:
                    ports.setdefault(p["name"], set()).add(int(p["containerPort"]))
    return ports


def management_port_problems(objs: list[Obj]) -> list[str]:
    """No Service may lead to the management or metrics port, by number or by port name."""
    named = _named_ports(objs)
    problems = []
    for svc in (o for o in objs if o["kind"] == "Service"):
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            numbers = named.get(target, set()) if isinstance(target, str) else {int(target)}
            for number in numbers & set(MANAGEMENT_PORTS):
                problems.append(f"{name(svc)} exposes the {MANAGEMENT_PORTS[number]} port {number}")
    return problems


def digest_problems(objs: list[Obj]) -> list[str]:
    return [
        f"{name(o)} container {c['name']} image {c['image']} is not pinned by digest"
        for o, spec in workloads(objs)
        for c in containers(spec)
        if not DIGEST.search(c["image"])
    ]


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    if selector.get("matchExpressions"):
        return True  # be conservative: treat expressions as possibly matching
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def redis_reachability_problems(objs: list[Obj]) -> list[str]:
    """Every NetworkPolicy that admits traffic to Redis or Sentinel pods admits only the
    allowed peers, and one isolates each of them."""
    redis = {
        name(o): pod_labels(o)
        for o, _ in workloads(objs)
        if pod_labels(o).get(COMPONENT) in REDIS_COMPONENTS
    }
    if not redis:
        return ["no Redis workload found"]
    problems = []
    isolated: set[str] = set()
    for pol in (o for o in objs if o["kind"] == "NetworkPolicy"):
        spec = pol["spec"]
        selected = {
            w for w, labels in redis.items() if _selects(spec.get("podSelector", {}), labels)
        }
        if not selected:
            continue
        if "Ingress" in spec.get("policyTypes", ["Ingress"]):
            isolated |= selected
        for rule in spec.get("ingress", []):
            peers = rule.get("from")
            if not peers:
                problems.append(f"{name(pol)} admits any source to {sorted(selected)}")
                continue
            for peer in peers:
                if peer not in ALLOWED_REDIS_PEERS:
                    problems.append(f"{name(pol)} admits {peer} to {sorted(selected)}")
    problems += [f"no NetworkPolicy isolates {w}" for w in sorted(set(redis) - isolated)]
    return problems


def _strictly_selects(selector: Obj, labels: dict[str, str]) -> bool:
    """``selector`` is plain matchLabels, non-empty, and matches ``labels``."""
    wanted = selector.get("matchLabels", {})
    return (
        bool(wanted) and not selector.get("matchExpressions") and wanted.items() <= labels.items()
    )


def replication_problems(objs: list[Obj], component: str, replicas: int, keep: int) -> list[str]:
    """``component`` runs as ``replicas`` pods of one workload, never two on one node
    (required anti-affinity by hostname), and a PodDisruptionBudget keeps ``keep`` of them
    through drains."""
    found = [(o, s) for o, s in workloads(objs) if pod_labels(o).get(COMPONENT) == component]
    if len(found) != 1:
        return [f"{len(found)} workloads run {component}, not one"]
    ((obj, spec),) = found
    labels = pod_labels(obj)
    problems = []
    if obj["spec"].get("replicas", 1) != replicas:
        problems.append(f"{name(obj)} runs {obj['spec'].get('replicas', 1)} pods, not {replicas}")
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    if not any(
        term.get("topologyKey") == "kubernetes.io/hostname"
        and _strictly_selects(term.get("labelSelector", {}), labels)
        for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    ):
        problems.append(f"{name(obj)} may put two of its pods on one node")
    budgets = [
        o["spec"]
        for o in objs
        if o["kind"] == "PodDisruptionBudget" and _strictly_selects(o["spec"]["selector"], labels)
    ]
    if [b.get("minAvailable") for b in budgets] != [keep]:
        problems.append(f"{name(obj)}: disruption budgets {budgets}, not one minAvailable {keep}")
    return problems


def pod_urls(objs: list[Obj], component: str, scheme: str, port_name: str) -> list[str]:
    """The URL of every pod of ``component``'s StatefulSet, by its stable DNS name."""
    ((obj, spec),) = [
        (o, s)
        for o, s in workloads(objs)
        if o["kind"] == "StatefulSet" and pod_labels(o).get(COMPONENT) == component
    ]
    ports = {p["name"]: p["containerPort"] for c in containers(spec) for p in c.get("ports", [])}
    host = f"{obj['spec']['serviceName']}"
    return [
        f"{scheme}://{obj['metadata']['name']}-{n}.{host}:{ports[port_name]}"
        for n in range(obj["spec"].get("replicas", 1))
    ]


def kms_client_problems(objs: list[Obj]) -> list[str]:
    """Every container with --kms names every KMS replica (so it can move to the next)."""
    replicas = set(pod_urls(objs, "kms", "https", "https"))
    problems = []
    for o, spec in workloads(objs):
        for c in containers(spec):
            args = c.get("args", [])
            if "--kms" in args:
                given = set(args[args.index("--kms") + 1].split(","))
                if given != replicas:
                    problems.append(
                        f"{name(o)}/{c['name']}: --kms {sorted(given)}, not {sorted(replicas)}"
                    )
    return problems


def committed_secret_problems(root: Path) -> list[str]:
    """No file under ``root`` holds a Secret with values (data / stringData)."""
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            # JSON is YAML too, but a large schema parses in milliseconds as JSON, in
            # tens of seconds with the pure-Python YAML parser
            text = path.read_text()
            docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
        except (yaml.YAMLError, json.JSONDecodeError):
            problems.append(f"{path} is not {path.suffix[1:].upper()}")
            continue
        for doc in docs:
            is_secret = isinstance(doc, dict) and doc.get("kind") == "Secret"
            if is_secret and (doc.get("data") or doc.get("stringData")):
                problems.append(f"{path} holds Secret values")
    return problems


def secret_references(objs: list[Obj]) -> dict[str, set[str]]:
    """Secret name -> keys the manifests need (an empty set: the whole Secret is mounted)."""
    refs: dict[str, set[str]] = {}
    for _, spec in workloads(objs):
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                keys = {item["key"] for item in vol["secret"].get("items", [])}
                refs.setdefault(vol["secret"]["secretName"], set()).update(keys)
        for c in containers(spec):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(ref["name"], set()).add(ref["key"])
    for auth in (o for o in objs if o["kind"] == "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs


def secret_mounts(objs: list[Obj], workload: str) -> dict[str, str]:
    """Where a workload's containers see each Secret: mount path -> Secret name."""
    for obj, spec in workloads(objs):
        if obj["metadata"]["name"] == workload:
            volumes = {
                v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v
            }
            return {
                m["mountPath"]: volumes[m["name"]]
                for c in spec["containers"]
                for m in c.get("volumeMounts", [])
                if m["name"] in volumes
            }
    raise KeyError(workload)
