"""The container image (deploy/image): built, then run the way an operator runs it.

``podman run`` cannot work in this sandbox (it always sets rlimits, and setrlimit is denied),
so the test runs the image's OCI bundle (``umoci unpack``) with ``runc`` directly, with what
``podman run --read-only --cap-drop=ALL -v state:/var/lib/trustserve ...`` would give: the
image's own user, a read-only root filesystem, no capabilities, volumes bound from the host.
Unlike podman it shares the host's network namespace (the sandbox gives no other) and sets
no rlimits or cgroup limits; nothing else is adjusted. Needs root, mmdebstrap, umoci and runc
(``make debs``); the first build takes a few minutes, later ones reuse ``build/oci`` until
something that goes into the image changes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import free_port
from trustserve.tls import client_context

# the image build (the module fixture) may take its own 1800 s budget on a loaded machine;
# the suite's 900 s per-test limit would cut it off first
pytestmark = pytest.mark.timeout(2400)

REPO = Path(__file__).resolve().parents[2]
UID = 10001
STATE, CACHE = "/var/lib/trustserve", "/var/cache/trustserve"
START_TIMEOUT_S = 600  # the first start builds the demo models inside the container


def test_image_lock_pins_every_dependency_in_pyproject() -> None:
    """A dependency added to pyproject.toml without ``make image-lock`` would miss the image."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = (REPO / "deploy" / "image" / "requirements.lock").read_text()
    pins = {
        canonicalize_name(name): Version(version)
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, re.MULTILINE)
    }
    for line in project["dependencies"]:
        wanted = Requirement(line)
        pinned = pins.get(canonicalize_name(wanted.name))
        assert pinned is not None, f"{wanted.name} is not in requirements.lock: make image-lock"
        assert wanted.specifier.contains(pinned, prereleases=True), (
            f"requirements.lock pins {wanted.name}=={pinned}, pyproject wants {wanted.specifier}"
        )


def _build_script() -> object:
    spec = importlib.util.spec_from_file_location("image_build", REPO / "deploy/image/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_moved_debian_mirror_is_reported_package_by_package_not_refused() -> None:
    """Debian's security updates change the image; the build names each move, old -> new."""
    build = _build_script()
    locked = "libc6=2.36-9+deb12u9\nlibpam0g=1.5.2-6+deb12u2\nzlib1g=1:1.2.13.dfsg-1\n"
    resolved = "libc6=2.36-9+deb12u9\nlibpam0g=1.5.2-6+deb12u3\nlibzstd1=1.5.4+dfsg2-5\n"
    assert build.debian_changes(locked, resolved) == [  # type: ignore[attr-defined]
        "libpam0g 1.5.2-6+deb12u2 -> 1.5.2-6+deb12u3",
        "libzstd1 (none) -> 1.5.4+dfsg2-5",
        "zlib1g 1:1.2.13.dfsg-1 -> (none)",
    ]
    assert build.debian_changes(locked, locked) == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def image() -> str:
    """The image's digest: ``make image``'s build (reused when its inputs are unchanged)."""
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap's root mode and runc need root")
    missing = [t for t in ("mmdebstrap", "umoci", "runc") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (make debs)")
    log = REPO / "build" / "image-build.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        build = subprocess.run(
            [sys.executable, str(REPO / "deploy" / "image" / "build.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    if build.returncode != 0:
        pytest.fail(f"image build failed:\n{log.read_text()[-4000:]}")
    digest = (REPO / "build" / "oci" / "digest").read_text().strip()
    printed = log.read_text()
    assert digest.startswith("sha256:") and digest in printed
    # the packages the image holds are recorded beside it, and every move from the lock
    # (a security update since the lock was written) is printed, not an error
    locked = (REPO / "deploy" / "image" / "debian-packages.lock").read_text()
    resolved = (REPO / "build" / "oci" / "debian-packages.lock").read_text()
    moved = _build_script().debian_changes(locked, resolved)  # type: ignore[attr-defined]
    assert all(f"  {line}\n" in printed for line in moved)
    assert ("Debian packages: as in" in printed) == (not moved)
    return digest


@pytest.fixture(scope="module")
def bundle(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{REPO / 'build' / 'oci'}:trustserve", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _oci_blob(digest: str) -> dict[str, object]:
    algorithm, hexdigest = digest.split(":")
    blob = REPO / "build" / "oci" / "blobs" / algorithm / hexdigest
    data: dict[str, object] = json.loads(blob.read_text())
    return data


@pytest.mark.image
def test_image_config_runs_trustserve_as_a_non_root_user_with_state_on_volumes(
    image: str,
) -> None:
    manifest = _oci_blob(image)
    config_ref = manifest["config"]
    assert isinstance(config_ref, dict)
    config = _oci_blob(config_ref["digest"])["config"]
    assert isinstance(config, dict)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/opt/trustserve/bin/trustserve"]
    assert set(config["Volumes"]) == {STATE, CACHE}
    assert f"TRUSTSERVE_HOME={STATE}" in config["Env"]
    assert not any("TOKEN" in e or "PASS" in e or "KEY" in e for e in config["Env"])


@pytest.mark.image
def test_image_holds_no_state_and_no_private_key(bundle: Path) -> None:
    """Nothing of a deployment is baked in: state directories empty, no private key anywhere."""
    rootfs = bundle / "rootfs"
    for directory in (STATE, CACHE):
        path = rootfs / directory.lstrip("/")
        assert path.is_dir() and not any(path.iterdir())
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (UID, 0o700)
    keys = [
        path
        for path in rootfs.rglob("*")
        if path.is_file() and not path.is_symlink() and _holds_pem_private_key(path)
    ]
    assert keys == []


PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/]{40}")


def _holds_pem_private_key(path: Path) -> bool:
    """A PEM private key in a text file (libraries' binaries embed self-test keys)."""
    data = path.read_bytes()
    return b"\0" not in data and PEM_PRIVATE_KEY.search(data) is not None


@dataclass
class Container:
    runc: list[str]
    name: str
    state: Path
    port: int
    log: Path

    def exec(self, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        flags = ["--user", user] if user else []
        return subprocess.run(
            [*self.runc, "exec", *flags, self.name, *cmd],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def pids(self) -> list[int]:
        out = subprocess.run(
            [*self.runc, "ps", "--format", "json", self.name],
            check=True,
            capture_output=True,
            text=True,
        )
        return [int(p) for p in json.loads(out.stdout)]


def _runtime_config(bundle: Path, state: Path, cache: Path, args: list[str]) -> None:
    """config.json as a hardened ``podman run`` makes it, minus what this sandbox denies."""
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    process = spec["process"]
    process["args"] = [process["args"][0], *args]  # the image's entrypoint, our command
    process["terminal"] = False
    process.pop("rlimits", None)  # setrlimit is denied here
    process["capabilities"] = {}  # --cap-drop=ALL
    process["noNewPrivileges"] = True
    spec["root"]["readonly"] = True  # --read-only
    spec["hostname"] = "trustserve"
    linux = spec["linux"]
    linux.pop("resources", None)  # no cgroup limits here
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
    volumes = {STATE: state, CACHE: cache}
    mounts = [m for m in spec["mounts"] if m["destination"] not in volumes]
    for destination, source in volumes.items():
        options = ["rbind", "rw", "nosuid", "nodev", "noexec"]
        mounts.append({"destination": destination, "type": "bind", "source": str(source),
                       "options": options})  # fmt: skip
    mounts.append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["rw", "nosuid", "nodev", "noexec", "mode=1777"]}
    )  # fmt: skip
    spec["mounts"] = mounts
    path.write_text(json.dumps(spec, indent=1))


@pytest.fixture(scope="module")
def container(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """``trustserve up`` in the image, its state on a host directory owned by the image's user."""
    root = tmp_path_factory.mktemp("container")
    state, cache = root / "state", root / "cache"
    for volume in (state, cache):
        volume.mkdir(mode=0o700)
        os.chown(volume, UID, UID)
    ports = [free_port() for _ in range(4)]
    args = ["up", "--workers", "1", "--port", str(ports[0]), "--management-port", str(ports[1])]
    args += ["--metrics-port", str(ports[2]), "--kms-port", str(ports[3])]
    _runtime_config(bundle, state, cache, args)
    runc = ["runc", "--root", str(root / "runc")]
    name = f"trustserve-test-{uuid.uuid4().hex[:8]}"
    log = root / "container.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*runc, "run", "--bundle", str(bundle), name], stdout=out, stderr=subprocess.STDOUT
        )
    box = Container(runc, name, state, ports[0], log)
    try:
        _wait_ready(box, proc)
        yield box
    finally:
        subprocess.run([*runc, "kill", name, "KILL"], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run([*runc, "delete", "--force", name], capture_output=True)


def _wait_ready(box: Container, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    ca = box.state / "tls" / "ca.pem"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the container exited ({proc.returncode}):\n{box.log.read_text()}")
        if ca.exists():
            try:
                with httpx.Client(verify=client_context(ca), timeout=5) as c:
                    if c.get(f"https://127.0.0.1:{box.port}/v2/models/digits/ready").is_success:
                        return
            except httpx.HTTPError:
                pass
        time.sleep(2)
    pytest.fail(f"not ready after {START_TIMEOUT_S}s:\n{box.log.read_text()[-4000:]}")


@pytest.mark.image
def test_container_answers_inference_over_https_with_the_ca_it_wrote(
    container: Container,
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, labels = digits.data[:40].astype(np.float32), digits.target[:40]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}  # fmt: skip
    ca = container.state / "tls" / "ca.pem"
    with httpx.Client(verify=client_context(ca), timeout=30) as c:
        r = c.post(f"https://127.0.0.1:{container.port}/v2/models/digits/infer", json=body)
        assert r.status_code == 200, r.text
        scores = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(len(x), -1)
        assert (scores.argmax(axis=1) == labels).mean() >= 0.9
    # the system's CAs do not vouch for it: only the CA the container wrote does
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=5) as c:
        c.get(f"https://127.0.0.1:{container.port}/v2/health/ready")


@pytest.mark.image
def test_container_runs_as_the_non_root_user_and_keeps_state_on_the_volume(
    container: Container,
) -> None:
    pids = container.pids()
    assert len(pids) >= 2  # the stack and its worker process
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert uids == [str(UID)] * 4, f"pid {pid} runs as {uids}"
    written = [p for p in container.state.rglob("*") if p.is_file()]
    assert container.state / "tls" / "ca.pem" in written
    assert all(p.stat().st_uid == UID for p in written)


@pytest.mark.image
def test_container_root_filesystem_is_read_only(container: Container) -> None:
    """Not only file permissions: root inside the container cannot write there either."""
    as_user = container.exec("/bin/sh", "-c", "id -u && touch /opt/trustserve/x")
    assert as_user.returncode != 0
    assert as_user.stdout.strip() == str(UID)
    as_root = container.exec("/bin/sh", "-c", "touch /etc/x", user="0:0")
    assert as_root.returncode != 0
    assert "Read-only file system" in as_root.stderr
    in_state = container.exec("/bin/sh", "-c", f"touch {STATE}/x && echo ok")
    assert in_state.stdout.strip() == "ok"
