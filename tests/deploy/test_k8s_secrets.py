"""deploy/k8s/make-secrets.sh: the documented step that makes every Secret the manifests name.

The script runs for real (openssl, ``kubectl --dry-run=client``); its Secrets are
validated, matched key by key against what the rendered overlays mount and read, and
the Redis configuration of the base (redis.conf + the generated ACL file and
certificates) is run in a real redis-server to show TLS and the ACL users hold.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from cryptography import x509

from tests.deploy import k8s_checks as checks
from tests.deploy.conftest import ENV, SCRIPT
from tests.deploy.test_k8s import K8S, KUBERNETES_VERSION, OVERLAYS, find, render, target
from tests.support import free_port
from trustserve.broker.redis_streams import GROUP


def _paths_read(c: dict[str, Any], *urls: str) -> Iterator[str]:
    """Every file path a container's command line, environment, broker or state URL names."""
    yield from c.get("args", [])
    for env in c.get("env", []):
        yield env.get("value", "")
    for url in urls:
        query = parse_qs(urlsplit(url).query)
        for key in ("ca", "password_file", "cert", "key"):
            yield from query.get(key, [])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_and_key_the_manifests_use_is_made(
    overlay: str, secrets: dict[str, dict[str, bytes]]
) -> None:
    objs = render(overlay)
    for name, keys in checks.secret_references(objs).items():
        assert name in secrets, f"{name} is named by the manifests but never made"
        assert keys <= set(secrets[name]), f"{name} lacks {keys - set(secrets[name])}"
    values = target(objs)
    for workload in ("trustserve-frontend", "trustserve-worker", "trustserve-kms"):
        mounts = checks.secret_mounts(objs, workload)
        kind = "StatefulSet" if workload == "trustserve-kms" else "Deployment"
        (c,) = find(objs, kind, workload)["spec"]["template"]["spec"]["containers"]
        used = 0
        broker = values.get(f"broker_url_{workload.removeprefix('trustserve-')}", "")
        state = values["kms_state"] if workload == "trustserve-kms" else ""
        for path in _paths_read(c, broker, state):
            for mount, secret in mounts.items():
                if path.startswith(mount + "/"):
                    assert path[len(mount) + 1 :] in secrets[secret], f"{workload}: {path}"
                    used += 1
        assert used or overlay == "sgx"  # the enclaves' files are named in their manifests


def _names(secret: dict[str, bytes]) -> list[str]:
    cert = x509.load_pem_x509_certificate(secret["tls.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(sans.get_values_for_type(x509.DNSName))


def _usages(secret: dict[str, bytes]) -> set[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(secret["tls.crt"])
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_certificates_name_the_services_the_manifests_use(
    secrets: dict[str, dict[str, bytes]],
) -> None:
    objs = render("dev")
    values = target(objs)
    sentinels = urlsplit(values["broker_url_worker"]).netloc.split("@")[1].split(",")
    assert len(sentinels) == 3
    redis_names = _names(secrets["trustserve-redis-tls"])
    for host in [s.rsplit(":", 1)[0] for s in sentinels] + [
        "trustserve-redis.trustserve.svc.cluster.local",  # KEDA
        "trustserve-redis-0.trustserve-redis-pods.trustserve.svc.cluster.local",
        "trustserve-redis-1.trustserve-redis-pods.trustserve.svc.cluster.local",
    ]:
        assert host in redis_names, host
    (worker,) = find(objs, "Deployment", "trustserve-worker")["spec"]["template"]["spec"][
        "containers"
    ]
    kms_urls = worker["args"][worker["args"].index("--kms") + 1].split(",")
    kms_names = _names(secrets["trustserve-kms-tls"])
    for host in ["localhost", "trustserve-kms", *(urlsplit(u).hostname for u in kms_urls)]:
        assert host in kms_names, host
    etcd_names = _names(secrets["trustserve-etcd-tls"])
    for member in urlsplit(values["kms_state"]).netloc.split(","):
        assert member.rsplit(":", 1)[0] in etcd_names, member
    # etcd members are servers and each other's clients; the KMS only a client of etcd
    server, client = x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH
    assert _usages(secrets["trustserve-etcd-tls"]) == {server, client}
    assert _usages(secrets["trustserve-etcd-client"]) == {client}
    assert secrets["trustserve-etcd-client"]["ca.crt"] == secrets["trustserve-etcd-tls"]["ca.crt"]
    # etcd has a CA of its own: no other certificate of the deployment opens it
    assert secrets["trustserve-etcd-tls"]["ca.crt"] not in (
        secrets["trustserve-ca"]["ca.pem"],
        secrets["trustserve-redis-tls"]["ca.crt"],
    )
    cert = x509.load_pem_x509_certificate(secrets["trustserve-frontend-tls"]["tls.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "serve.example.org" in sans.get_values_for_type(x509.DNSName)


def test_the_script_refuses_to_replace_keys_in_use(tmp_path: Path) -> None:
    if shutil.which("openssl") is None or shutil.which("kubectl") is None:
        pytest.skip("make-secrets.sh needs openssl and kubectl")
    subprocess.run([str(SCRIPT), str(tmp_path)], check=True, capture_output=True, env=ENV)
    before = (tmp_path / "secrets.yaml").read_bytes()
    again = subprocess.run([str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=ENV)
    assert again.returncode == 2 and "refusing" in again.stderr
    assert (tmp_path / "secrets.yaml").read_bytes() == before


@pytest.fixture
def redis_from_manifests(
    tmp_path: Path, secrets: dict[str, dict[str, bytes]]
) -> Iterator[tuple[int, Path]]:
    """redis-server running the base's redis.conf with the Secrets where the pod mounts them."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    objs = render("dev")
    conf = find(objs, "ConfigMap", "trustserve-redis-config")["data"]["redis.conf"]
    for mount, secret in checks.secret_mounts(objs, "trustserve-redis").items():
        where = tmp_path / mount.lstrip("/")
        where.mkdir(parents=True)
        for key, value in secrets[secret].items():
            (where / key).write_bytes(value)
        conf = conf.replace(mount + "/", f"{where}/")
    port = free_port()
    (tmp_path / "data").mkdir()
    conf = conf.replace("tls-port 6380", f"tls-port {port}").replace(
        "dir /data", f"dir {tmp_path}/data"
    )
    (tmp_path / "redis.conf").write_text(conf + "\nbind 127.0.0.1\n")
    proc = subprocess.Popen([server, str(tmp_path / "redis.conf")], stdout=subprocess.PIPE)
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited: {proc.stdout.read() if proc.stdout else ''!r}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield port, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _client(port: int, tls_dir: Path, user: str, password: str, cert: bool = True) -> redis.Redis:
    # 127.0.0.1 is not a name in the certificate; the names are checked in the test above
    return redis.Redis(
        host="127.0.0.1", port=port, username=user, password=password, ssl=True,
        ssl_ca_certs=str(tls_dir / "ca.crt"), ssl_check_hostname=False, socket_timeout=5,
        ssl_certfile=str(tls_dir / "tls.crt") if cert else None,
        ssl_keyfile=str(tls_dir / "tls.key") if cert else None,
    )  # fmt: skip


def _materialize(tmp_path: Path, secret: dict[str, bytes], name: str) -> Path:
    where = tmp_path / name
    where.mkdir()
    for key, value in secret.items():
        (where / key).write_bytes(value)
    return where


def test_redis_from_the_manifests_gives_each_role_only_its_rights(
    redis_from_manifests: tuple[int, Path], secrets: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    port, _ = redis_from_manifests
    stream = "trustserve:q:resnet50:int8"
    frontend_tls = _materialize(tmp_path, secrets["trustserve-redis-frontend"], "frontend")
    worker_tls = _materialize(tmp_path, secrets["trustserve-redis-worker"], "worker")
    frontend_pw = secrets["trustserve-redis-frontend"]["password"].decode()
    worker_pw = secrets["trustserve-redis-worker"]["password"].decode()
    with _client(port, frontend_tls, "frontend", frontend_pw) as frontend:
        frontend.xgroup_create(stream, GROUP, "0", mkstream=True)
        frontend.xadd(stream, {"job": b"ciphertext"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            frontend.set("trustserve:nonce:00", "1")  # only workers keep the nonce store
        with pytest.raises(redis.exceptions.NoPermissionError):
            frontend.flushall()
    with _client(port, worker_tls, "worker", worker_pw) as worker:
        assert worker.xreadgroup(GROUP, "w1", {stream: ">"}, count=1)
    keda_secret = secrets["trustserve-redis-keda"]
    keda_tls = tmp_path / "keda"
    keda_tls.mkdir()
    for ours, theirs in (("ca.crt", "ca"), ("tls.crt", "cert"), ("tls.key", "key")):
        (keda_tls / ours).write_bytes(keda_secret[theirs])
    with _client(
        port, keda_tls, keda_secret["username"].decode(), keda_secret["password"].decode()
    ) as scaler:
        (group,) = scaler.xinfo_groups(stream)
        assert group["name"] == GROUP.encode() and group["pending"] == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            scaler.xrange(stream)  # KEDA may count jobs, never read them
        with pytest.raises(redis.exceptions.NoPermissionError):
            scaler.xadd(stream, {"job": b"forged"})


def test_redis_from_the_manifests_refuses_strangers(
    redis_from_manifests: tuple[int, Path], secrets: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    port, _ = redis_from_manifests
    worker_tls = _materialize(tmp_path, secrets["trustserve-redis-worker"], "worker")
    password = secrets["trustserve-redis-worker"]["password"].decode()
    with (
        pytest.raises(redis.exceptions.AuthenticationError),
        _client(port, worker_tls, "worker", "not-the-password") as intruder,
    ):
        intruder.ping()
    with (
        pytest.raises(redis.exceptions.ConnectionError),
        _client(port, worker_tls, "worker", password, cert=False) as no_cert,
    ):
        no_cert.ping()  # tls-auth-clients yes: a client certificate from the Redis CA
    plain = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()  # no plaintext listener: a client without TLS gets nowhere
    plain.close()


def test_the_deploy_doc_names_every_secret_and_the_kubernetes_version(
    secrets: dict[str, dict[str, bytes]],
) -> None:
    doc = (K8S.parents[1] / "docs" / "deploy.md").read_text()
    for name, keys in secrets.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert row, f"docs/deploy.md does not list the Secret {name}"
        assert all(f"`{key}`" in row for key in keys), (name, keys)
    assert f"Kubernetes {KUBERNETES_VERSION}" in doc
