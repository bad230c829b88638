"""deploy/gramine: the manifest template rendered for each role and checked as TOML.

Gramine cannot be installed here (no SGX, no Intel repository), so ``gramine-manifest``
is stood in for by jinja2 with the two values it would supply (``gramine.libos`` and
``gramine.runtimedir()``, given fixed paths: a test double). Everything else is real:
the template, this machine's interpreter, standard library and installed packages,
and the trustserve CLI that parses the argv the manifest fixes. Each rule is also
shown to catch a manifest that breaks it.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import re
import sys
import sysconfig
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from tests.deploy.test_k8s import find, render
from trustserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "gramine" / "trustserve.manifest.template"
PODS = ("worker", "frontend", "kms")  # one enclave per pod in the sgx overlay
ROLES = (*PODS, "kms-init")  # kms-init: once, makes the root key in the sealed home
GiB = 1 << 30
MODEL_BYTES = 110 * 1024 * 1024  # resnet50 fp32, the largest demo archive (~100 MiB)
# What gramine-manifest would supply (test double: Gramine is not installed here)
GRAMINE = SimpleNamespace(
    libos="/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
    runtimedir=lambda: "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc",
)
PYTHON = os.path.realpath(sys.executable)
STDLIB = sysconfig.get_path("stdlib")
SITE_PACKAGES = sysconfig.get_path("purelib")
Manifest = dict[str, Any]


def render_manifest(role: str, **extra: Any) -> Manifest:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    text = env.from_string(TEMPLATE.read_text()).render(
        gramine=GRAMINE,
        role=role,
        python=PYTHON,
        stdlib=STDLIB,
        site_packages=SITE_PACKAGES,
        arch_libdir="/lib/x86_64-linux-gnu",
        broker_url="rediss://trustserve@trustserve-redis:6380/0?ca=/etc/trustserve/redis/ca.crt"
        "&password_file=/etc/trustserve/redis/password",
        kms_url="https://trustserve-kms:8443",
        pccs_url="https://pccs.example:8081/sgx/certification/v4/",
        archive="/models/resnet50.tsm",
        **extra,
    )
    return tomllib.loads(text)


def _size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]?)", text).groups()  # type: ignore[union-attr]
    return int(number) << {"": 0, "K": 10, "M": 20, "G": 30}[unit]


def _keys(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in [prefix + key, *_keys(v, prefix + key + ".")]]
    return []


def _uris(entries: list[Any]) -> list[str]:
    return [(e if isinstance(e, str) else e["uri"]).removeprefix("file:") for e in entries]


def _covered(path: str, entries: list[str]) -> bool:
    return any(path == e or (e.endswith("/") and path.startswith(e)) for e in entries)


def manifest_problems(m: Manifest, role: str, model_bytes: int = MODEL_BYTES) -> list[str]:
    sgx, loader = m.get("sgx", {}), m.get("loader", {})
    problems = []
    if sgx.get("debug") is not False:
        problems.append("sgx.debug is not false")
    if sgx.get("remote_attestation") != "dcap":
        problems.append("sgx.remote_attestation is not dcap")
    insecure = [k for k in _keys(m) if "insecure__" in k]
    if insecure:
        problems.append(f"insecure options: {insecure}")
    if sgx.get("file_check_policy", "strict") != "strict":
        problems.append("sgx.file_check_policy is not strict")
    argv = loader.get("argv")
    if not isinstance(argv, list) or argv[:5] != [PYTHON, "-s", "-B", "-m", "trustserve.cli"]:
        problems.append("loader.argv does not fix the interpreter and trustserve's entry point")
    if _size(sgx.get("enclave_size", "0")) < 2 * GiB + 3 * model_bytes:
        problems.append("sgx.enclave_size cannot hold Python, the engine and the model")
    if sgx.get("max_threads", 0) < 16:
        problems.append("sgx.max_threads is too small for the engine and the event loop")
    trusted, allowed = _uris(sgx.get("trusted_files", [])), _uris(sgx.get("allowed_files", []))
    for code in (PYTHON, STDLIB + "/", SITE_PACKAGES + "/", GRAMINE.libos):
        if not _covered(code, trusted):
            problems.append(f"{code} is not a trusted file")
        if any(_covered(a, [code]) or _covered(code, [a]) for a in allowed):
            problems.append(f"{code} is (partly) an allowed file: unverified code")
    for mount in m.get("fs", {}).get("mounts", []):
        if mount.get("type", "chroot") == "chroot":
            uri = mount["uri"].removeprefix("file:")
            covered = _covered(uri, trusted) or _covered(uri + "/", trusted + allowed)
            if not covered and not any(_covered(e, [uri + "/"]) for e in trusted + allowed):
                problems.append(f"mount {uri} has no trusted or allowed files")
    return problems


@pytest.mark.parametrize("role", ROLES)
def test_each_role_renders_to_a_manifest_that_keeps_every_rule(role: str) -> None:
    assert manifest_problems(render_manifest(role), role) == []


@pytest.mark.parametrize("role", ROLES)
def test_the_fixed_argv_is_accepted_by_the_real_cli(role: str) -> None:
    argv = render_manifest(role)["loader"]["argv"]
    args = build_parser().parse_args(argv[5:])
    if role == "kms-init":
        assert args.path.parent == Path("/var/lib/trustserve")  # the sealed home
        return
    assert args.attestation == "sgx" if role != "kms" else args.provider == "sgx"
    if role in ("worker", "frontend"):
        assert str(args.kms_ca) in _uris(render_manifest(role)["sgx"]["trusted_files"])  # measured
        # the KMS is trusted by its attestation under a measured policy, not a host file
        assert args.kms_policy is not None and args.kms_identity is None
        assert str(args.kms_policy) in _uris(render_manifest(role)["sgx"]["trusted_files"])
    if role == "kms":
        assert str(args.policy) in _uris(render_manifest(role)["sgx"]["trusted_files"])


def test_every_installed_package_is_covered_by_the_trusted_files() -> None:
    """Every file of every distribution in this environment would be hashed into MRENCLAVE."""
    trusted = _uris(render_manifest("worker")["sgx"]["trusted_files"])
    checked = 0
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            path = os.path.realpath(str(file.locate()))
            if not path.startswith(SITE_PACKAGES) or not os.path.exists(path):
                continue  # scripts in bin/ or editable-install sources are not imported from here
            assert _covered(path, trusted), path
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize("role", ["kms", "kms-init"])
def test_kms_state_is_sealed_and_its_key_file_lives_there(role: str) -> None:
    m = render_manifest(role)
    (home,) = [x for x in m["fs"]["mounts"] if x["path"] == "/var/lib/trustserve"]
    assert home["type"] == "encrypted" and home["key_name"] in ("_sgx_mrsigner", "_sgx_mrenclave")
    assert m["loader"]["env"]["TRUSTSERVE_KMS_KEY_FILE"].startswith(home["path"] + "/")


def test_an_unknown_role_does_not_render_a_manifest() -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        render_manifest("shell")


def test_enclave_size_follows_the_model() -> None:
    assert manifest_problems(render_manifest("worker", enclave_size="1G"), "worker")
    big_model = 4 * GiB
    assert manifest_problems(render_manifest("worker"), "worker", big_model)
    assert (
        manifest_problems(render_manifest("worker", enclave_size="16G"), "worker", big_model) == []
    )


def _set(path: str, value: Any) -> Any:
    def mutate(m: Manifest) -> None:
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return mutate


MUTATIONS = {
    "debug": _set("sgx.debug", True),
    "epid": _set("sgx.remote_attestation", "epid"),
    "host argv": _set("loader.insecure__use_cmdline_argv", True),
    "host env": _set("loader.insecure__use_host_env", True),
    "lax files": _set("sgx.file_check_policy", "allow_all_but_log"),
    "argv shell": _set("loader.argv", ["/bin/sh", "-c", "trustserve worker"]),
    "few threads": _set("sgx.max_threads", 4),
    "packages untrusted": lambda m: m["sgx"]["trusted_files"].remove(f"file:{SITE_PACKAGES}/"),
    "packages allowed": lambda m: m["sgx"]["allowed_files"].append(f"file:{SITE_PACKAGES}/"),
    "stray mount": lambda m: m["fs"]["mounts"].append({"path": "/srv", "uri": "file:/srv"}),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_each_rule_catches_a_broken_manifest(case: str) -> None:
    m = copy.deepcopy(render_manifest("worker"))
    MUTATIONS[case](m)
    assert manifest_problems(m, "worker"), case


def test_the_sgx_overlay_mounts_what_the_enclaves_read() -> None:
    """Host paths the manifests read (Secrets, models, sealed state) are mounted in the pods."""
    objs = render("sgx")
    for role in PODS:
        kind = "StatefulSet" if role == "kms" else "Deployment"
        spec = find(objs, kind, f"trustserve-{role}")["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        mounted = [v["mountPath"] for v in c["volumeMounts"]]
        m = render_manifest(role)
        sealed = [x["uri"] for x in m["fs"]["mounts"] if x.get("type") == "encrypted"]
        for path in _uris(m["sgx"]["allowed_files"] + sealed):
            assert any(path.rstrip("/") == p or path.startswith(p + "/") for p in mounted), (
                role,
                path,
                mounted,
            )
