"""Build the trustserve OCI image from Debian packages and PyPI wheels only.

    python3 deploy/image/build.py [--force] [--output DIR] [--update-debian-lock]
                                  [--check-reproducible]

Steps (docs/image.md says why each is pinned):

1. wheelhouse: every wheel of ``requirements.lock`` and ``build-requirements.lock``,
   downloaded by pip with ``--require-hashes`` for the image's Python and platform;
2. the trustserve wheel, built offline from a clean copy of the source with the locked
   setuptools/wheel;
3. the root filesystem: ``mmdebstrap`` (Debian bookworm, minbase + python3) with
   ``customize.sh`` installing the wheels into /opt/trustserve;
4. the OCI image layout in ``build/oci`` (``umoci``), its config (user, entrypoint, volumes)
   and every timestamp set from ``SOURCE_DATE_EPOCH``.

Prints the manifest digest and writes it to ``build/oci/digest``, and the Debian packages
the mirror resolved to ``build/oci/debian-packages.lock``. Debian's mirror moves (security
updates): a build never fails for that; it prints which packages differ from the committed
``debian-packages.lock`` (old -> new version), a record that only ``--update-debian-lock``
rewrites. When nothing that goes in has changed since the last build (``build/oci/inputs``),
the existing image is kept (and the difference printed again).
Needs root (mmdebstrap's root mode) and the Debian packages mmdebstrap, umoci.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OCI = REPO / "build" / "oci"  # the default output; its work directory is build/oci.work
LOCK = HERE / "debian-packages.lock"
TAG = "trustserve"

SUITE = "bookworm"
PYTHON = "3.11"  # bookworm's python3; requirements.lock is compiled for it
GLIBC_MINOR = 36  # bookworm's glibc 2.36: the newest manylinux wheels it runs
# The image's apt sources. TRUSTSERVE_IMAGE_MIRRORS ("line;line") builds from others instead,
# e.g. snapshot.debian.org to rebuild an old image from the packages of its day; the image
# still lists these, so the digest does not depend on where the packages came from.
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
UID = 10001
STATE = "/var/lib/trustserve"
CACHE = "/var/cache/trustserve"
ENV = (
    "PATH=/opt/trustserve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"TRUSTSERVE_HOME={STATE}",
    f"XDG_CACHE_HOME={CACHE}",
    f"HOME={STATE}",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
# What goes into the image: a change to any of these is a new image. The Debian lock is a
# record of what a build resolved, not an input: rewriting it changes neither the image nor
# SOURCE_DATE_EPOCH.
INPUTS = ("pyproject.toml", "README.md", "src", "deploy/image")
NOT_INPUTS = (LOCK.relative_to(REPO).as_posix(),)


def run(*cmd: str, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def source_date_epoch() -> int:
    """$SOURCE_DATE_EPOCH, else the time of the last commit that changed what goes in."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct", "--", *INPUTS]
        + [f":(exclude){path}" for path in NOT_INPUTS],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def inputs_fingerprint(epoch: int) -> str:
    """A hash of every file that goes into the image, and of the epoch."""
    h = hashlib.sha256(f"SOURCE_DATE_EPOCH={epoch}\n{mirrors()}\n".encode())
    for top in INPUTS:
        base = REPO / top
        paths = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in paths:
            rel = path.relative_to(REPO)
            if not path.is_file() or {"__pycache__", ".egg-info"} & set(_parts(rel)):
                continue
            if rel.as_posix() in NOT_INPUTS:
                continue
            h.update(f"{rel}\0{path.stat().st_mode & 0o111}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _parts(rel: Path) -> list[str]:
    return [p if not p.endswith(".egg-info") else ".egg-info" for p in rel.parts]


def arch() -> tuple[str, str]:
    """(Debian architecture, wheel platform machine) of this host, which the image gets."""
    deb = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(deb)
    if machine is None:
        sys.exit(f"build.py: no wheels are locked for the {deb} architecture")
    return deb, machine


def wheelhouse(dest: Path, machine: str) -> None:
    """Download the locked wheels (hash-checked) for the image's Python, not the host's."""
    platforms = [f"manylinux_2_{m}_{machine}" for m in range(GLIBC_MINOR, 4, -1)]
    platforms += [f"manylinux{v}_{machine}" for v in ("2014", "2010", "1")]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--require-hashes", "--no-deps"]
    cmd += ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON]
    cmd += ["--abi", "cp" + PYTHON.replace(".", ""), "--dest", str(dest)]
    for platform in platforms:
        cmd += ["--platform", platform]
    for lock in ("requirements.lock", "build-requirements.lock"):
        cmd += ["-r", str(HERE / lock)]
    run(*cmd)
    shutil.copy(HERE / "requirements.lock", dest / "requirements.lock")


def trustserve_wheel(dest: Path, epoch: int) -> None:
    """Build the wheel from a clean copy of the source, offline, with the locked setuptools."""
    with tempfile.TemporaryDirectory(prefix="trustserve-src-") as tmp:
        src = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
        shutil.copytree(REPO / "src", src / "src", ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        cmd = [sys.executable, "-m", "pip", "--isolated", "wheel", "--quiet", "--no-deps"]
        cmd += ["--no-index", "--find-links", str(dest), "--wheel-dir", str(dest), str(src)]
        run(*cmd, env=env)


def mirrors() -> tuple[str, ...]:
    lines = os.environ.get("TRUSTSERVE_IMAGE_MIRRORS", "").split(";")
    return tuple(line.strip() for line in lines if line.strip()) or DEBIAN_SOURCES


def rootfs(wheels: Path, tarball: Path, packages: Path, epoch: int) -> None:
    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": str(epoch),
        "TRUSTSERVE_WHEELHOUSE": str(wheels),
        "TRUSTSERVE_PACKAGES": str(packages),
        "TRUSTSERVE_APT_SOURCES": "".join(line + "\n" for line in DEBIAN_SOURCES),
    }
    cmd = ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "--format=tar"]
    cmd += ["--include=" + ",".join(DEBIAN_PACKAGES)]
    for excluded in ("/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*"):
        cmd += [f"--dpkgopt=path-exclude={excluded}"]
    cmd += [f"--customize-hook={HERE / 'customize.sh'}", SUITE, str(tarball), *mirrors()]
    run(*cmd, env=env)


def debian_versions(lock: str) -> dict[str, str]:
    """``name=version`` lines (a lock) as {name: version}."""
    pairs = (line.split("=", 1) for line in lock.splitlines() if line.strip())
    return {name: version for name, version in pairs}


def debian_changes(locked: str, resolved: str) -> list[str]:
    """What moved between two package lists, one line per package: ``name old -> new``."""
    old, new = debian_versions(locked), debian_versions(resolved)
    lines = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, "(none)"), new.get(name, "(none)")
        if before != after:
            lines.append(f"{name} {before} -> {after}")
    return lines


def report_debian_packages(oci: Path) -> None:
    """Print how the image's Debian packages differ from the committed lock (a record)."""
    resolved = oci / "debian-packages.lock"
    shown = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved
    locked = LOCK.read_text() if LOCK.exists() else ""
    changes = debian_changes(locked, resolved.read_text())
    if not changes:
        print(f"Debian packages: as in {LOCK.relative_to(REPO)}", flush=True)
        return
    print(
        f"Debian packages: {len(changes)} differ from {LOCK.relative_to(REPO)} "
        "(the mirror has moved since it was written; not an error):",
        *(f"  {line}" for line in changes),
        f"this image holds {shown}"
        "; to record it: python3 deploy/image/build.py --update-debian-lock, review, commit",
        sep="\n",
        flush=True,
    )


def oci_image(oci: Path, tarball: Path, epoch: int, deb_arch: str) -> str:
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = _project_version()
    shutil.rmtree(oci, ignore_errors=True)
    image = f"{oci}:{TAG}"
    run("umoci", "init", "--layout", str(oci))
    run("umoci", "new", "--image", image)
    run(
        "umoci", "raw", "add-layer", "--image", image, "--history.created", created,
        "--history.created_by", "deploy/image/build.py (mmdebstrap + customize.sh)",
        str(tarball),
    )  # fmt: skip
    cmd = ["umoci", "config", "--image", image, "--no-history", "--created", created]
    cmd += ["--os", "linux", "--architecture", deb_arch, "--author", "trustserve"]
    cmd += ["--config.user", f"{UID}:{UID}", "--config.workingdir", STATE]
    cmd += ["--config.entrypoint", "/opt/trustserve/bin/trustserve", "--config.cmd", "--help"]
    cmd += ["--config.volume", STATE, "--config.volume", CACHE]
    for port in ("8080", "8082", "8084"):  # inference, metrics, gRPC inference
        cmd += ["--config.exposedports", f"{port}/tcp"]
    for var in ENV:
        cmd += ["--config.env", var]
    for key, value in (("title", "trustserve"), ("version", version), ("created", created)):
        cmd += ["--config.label", f"org.opencontainers.image.{key}={value}"]
    run(*cmd)
    run("umoci", "gc", "--layout", str(oci))
    index = json.loads((oci / "index.json").read_text())
    (manifest,) = index["manifests"]
    return str(manifest["digest"])


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _project_version() -> str:
    import tomllib

    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def build(oci: Path, *, force: bool) -> str:
    """The image's digest: the existing one when nothing that goes in has changed."""
    epoch = source_date_epoch()
    fingerprint = inputs_fingerprint(epoch)
    stamp, digest_file = oci / "inputs", oci / "digest"
    packages = oci / "debian-packages.lock"
    if not force and digest_file.exists() and packages.exists() and _read(stamp) == fingerprint:
        return _read(digest_file)
    deb_arch, machine = arch()
    work = oci.with_name(oci.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    wheels = work / "wheels"
    wheels.mkdir(parents=True)
    wheelhouse(wheels, machine)
    trustserve_wheel(wheels, epoch)
    tarball, resolved = work / "rootfs.tar", work / "debian-packages.lock"
    rootfs(wheels, tarball, resolved, epoch)
    digest = oci_image(oci, tarball, epoch, deb_arch)
    shutil.copy(resolved, packages)
    shutil.rmtree(work)
    digest_file.write_text(digest + "\n")
    stamp.write_text(fingerprint + "\n")
    return digest


def check_reproducible(oci: Path, digest: str) -> None:
    """Build again from nothing next to ``oci``: the same Debian packages give the same digest.

    If the mirror moved between the two builds, that is said (with what moved) and the check
    is repeated once with a third build: a third party's update is not a failure.
    """
    reference, expected = oci, digest
    extra = [oci.with_name(oci.name + suffix) for suffix in (".again", ".again2")]
    for out in extra:
        again = build(out, force=True)
        moved = debian_changes(_packages(reference), _packages(out))
        if not moved:
            break
        print("the Debian mirror moved between two builds:", *moved, sep="\n  ", flush=True)
        reference, expected = out, again
    else:
        sys.exit("build.py: the Debian mirror moved twice during the check; run it again")
    for out in extra:
        if out != reference:
            shutil.rmtree(out, ignore_errors=True)
    if again != expected:
        sys.exit(f"build.py: NOT reproducible: {expected} then {again}, same Debian packages")
    print(f"reproducible: two builds from the same Debian packages gave {again}", flush=True)


def _packages(oci: Path) -> str:
    return (oci / "debian-packages.lock").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    parser.add_argument(
        "--output",
        type=Path,
        default=OCI,
        help=f"the OCI image layout to write (default {OCI.relative_to(REPO)})",
    )
    parser.add_argument(
        "--update-debian-lock",
        action="store_true",
        help="record the Debian packages of the image built (or kept) in debian-packages.lock",
    )
    parser.add_argument(
        "--check-reproducible",
        action="store_true",
        help="then build again from nothing: fail unless the same packages give the same digest",
    )
    args = parser.parse_args()
    for tool in ("mmdebstrap", "umoci"):
        if shutil.which(tool) is None:
            sys.exit(f"build.py: {tool} is not installed (make debs)")
    oci = args.output.resolve()
    first = build(oci, force=args.force)
    if args.update_debian_lock:
        shutil.copy(oci / "debian-packages.lock", LOCK)
        print(f"wrote {LOCK.relative_to(REPO)}", flush=True)
    report_debian_packages(oci)
    print(first, flush=True)
    if args.check_reproducible:
        check_reproducible(oci, first)
    return 0


if __name__ == "__main__":
    sys.exit(main())
