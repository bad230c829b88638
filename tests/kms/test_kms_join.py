"""A KMS replica with an empty disk and no operator secret joins a running one by mutual
attestation, and serves releases; one whose evidence the peer policy does not admit gets
nothing, and the running replica's audit log records the refusal.

Real processes: a 3-member etcd, ``trustserve kms serve`` replicas each with its own home.
The evidence is sim evidence (no TEE here): the peer policy names the sim platform keys of
the homes that may hold the root key, which is what a measurement pin does on hardware.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.attacks.join_fixtures import sim_policy
from tests.kms.etcd_cluster import EtcdCluster, etcd
from tests.kms.test_kms_etcd_serve import kms_command, kms_env, kms_serve
from tests.support import free_port, tiny_manifest
from trustserve.attestation import Policy, make_provider
from trustserve.crypto.rootkey import create_key_file
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import model_digest
from trustserve.keyrelease.trust import KmsTrust
from trustserve.tls import TlsFiles, issue_local_ca

__all__ = ["etcd"]  # the fixture


def _peer_policy(path: Path, *homes: Path) -> Path:
    """A KMS trust policy admitting the sim evidence of ``homes`` only."""
    path.write_text(json.dumps(sim_policy(*homes).to_json()))
    return path


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return issue_local_ca(tmp_path / "kms-tls", ["127.0.0.1"])


@pytest.fixture
def first(etcd: EtcdCluster, tmp_path: Path, tls: TlsFiles) -> Iterator[tuple[str, Path, Path]]:
    """The first replica (it has the operator secret), whose peer policy admits ``kms1``
    only: (its URL, its home, the peer policy)."""
    key_file = tmp_path / "operator.key"
    create_key_file(key_file)
    home, joiner = tmp_path / "kms0", tmp_path / "kms1"
    policy = _peer_policy(tmp_path / "peer-policy.yaml", home, joiner)
    port = free_port()
    extra = ("--allow-sim-any", "--provider", "sim", "--peer-policy", str(policy))
    with kms_serve(home, etcd.url(), port, tls.cert.parent, key_file, extra):
        yield f"https://127.0.0.1:{port}", home, policy


def _join_args(url: str, policy: Path, tls: TlsFiles) -> tuple[str, ...]:
    return (
        "--allow-sim-any",
        "--provider",
        "sim",
        "--join",
        url,
        "--peer-policy",
        str(policy),
        "--peer-ca",
        str(tls.ca),
    )


def _audit(home: Path) -> list[dict[str, object]]:
    lines = (home / "kms" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_replica_with_an_empty_disk_joins_by_attestation_and_serves_releases(
    etcd: EtcdCluster, tmp_path: Path, tls: TlsFiles, first: tuple[str, Path, Path]
) -> None:
    url, home, policy = first
    token = (home / "kms" / "admin.token").read_text().strip()
    manifest = tiny_manifest("m", "1")
    with KmsClient(url, ca_file=tls.ca, token=token) as owner:
        key_id, key = owner.provision_model_key(manifest)
    joiner = tmp_path / "kms1"
    # an empty disk but for the sim platform key (the stand-in for its TEE hardware), and
    # (kms_serve with None) no operator secret
    assert [p.name for p in joiner.rglob("*") if p.is_file()] == ["sim_platform_key"]
    port = free_port()
    with ExitStack() as running:
        args = _join_args(url, policy, tls)
        running.enter_context(kms_serve(joiner, etcd.url(), port, tls.cert.parent, None, args))
        # a worker that trusts the KMS by its attestation bundle, talking to the new one only
        worker_policy = KmsTrust(policy=Policy.load(policy))
        sim = make_provider("sim", tmp_path / "worker")
        with KmsClient(f"https://127.0.0.1:{port}", ca_file=tls.ca, trust=worker_policy) as kms:
            released = kms.release(sim, [key_id], {key_id: model_digest(manifest)})
        assert released[key_id] == key
        # one management token for every replica of the shared state: the operator's copy
        # from the first replica works at the joined one (which keeps it in its home too)
        assert (joiner / "kms" / "admin.token").read_text().strip() == token
        with KmsClient(f"https://127.0.0.1:{port}", ca_file=tls.ca, token=token) as owner:
            owner.provision_model_key(tiny_manifest("m", "2"))
    assert not (joiner / "kms" / "root-key.json").exists()  # the key stayed in memory
    joins = [e for e in _audit(home) if e["event"] == "replica-join"]
    assert len(joins) == 1 and joins[0]["evidence_kind"] == "sim"
    # the peer policy and the join are in the transparency log, for anyone to see
    signed = httpx.get(f"{url}/v1/log/checkpoint", verify=str(tls.ca)).text
    size = int(signed.split("\n")[1])
    page = httpx.get(f"{url}/v1/log/entries?start=0&end={size}", verify=str(tls.ca)).json()
    logged = {row["entry"]["kind"]: row["entry"] for row in page["entries"]}
    assert logged["kms-trust-policy"]["policy"] == Policy.load(policy).to_json()
    assert logged["replica-joined"]["evidence_kind"] == "sim"
    assert logged["replica-joined"]["peer"] == "127.0.0.1"


def test_a_replica_the_peer_policy_does_not_admit_gets_nothing_and_is_audited(
    etcd: EtcdCluster, tmp_path: Path, tls: TlsFiles, first: tuple[str, Path, Path]
) -> None:
    url, home, policy = first
    rogue = tmp_path / "rogue"  # its sim platform key is not in the peer policy
    rogue.mkdir()
    command = kms_command(
        rogue, etcd.url(), free_port(), tls.cert.parent, *_join_args(url, policy, tls)
    )
    done = subprocess.run(command, env=kms_env(None), capture_output=True, timeout=120)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "could not join a running KMS replica" in err and "replica join refused" in err
    refusals = [e for e in _audit(home) if e["event"] == "replica-join-refused"]
    assert len(refusals) == 1 and refusals[0]["claim"] == "platform_key", refusals
    assert not any(e["event"] == "replica-join" for e in _audit(home))


def test_a_kms_without_a_peer_policy_gives_the_root_key_to_no_one(
    etcd: EtcdCluster, tmp_path: Path, tls: TlsFiles
) -> None:
    key_file = tmp_path / "operator.key"
    create_key_file(key_file)
    home, joiner = tmp_path / "kms0", tmp_path / "kms1"
    port = free_port()
    extra = ("--allow-sim-any", "--provider", "sim")
    with kms_serve(home, etcd.url(), port, tls.cert.parent, key_file, extra):
        policy = _peer_policy(tmp_path / "peer-policy.yaml", home, joiner)
        args = _join_args(f"https://127.0.0.1:{port}", policy, tls)
        command = kms_command(joiner, etcd.url(), free_port(), tls.cert.parent, *args)
        done = subprocess.run(command, env=kms_env(None), capture_output=True, timeout=120)
    assert done.returncode != 0
    assert "started without --peer-policy" in done.stderr.decode()
    assert [e["claim"] for e in _audit(home) if e["event"] == "replica-join-refused"] == [
        "peer_policy"
    ]


def test_a_replica_whose_own_peer_policy_admits_more_gets_nothing(
    etcd: EtcdCluster, tmp_path: Path, tls: TlsFiles, first: tuple[str, Path, Path]
) -> None:
    """kms1 is admitted, but its host gave it a peer policy that also admits a home of
    the host's (tests/attacks/test_kms_join_review_policy_downgrade.py, in process)."""
    url, home, _ = first
    looser = _peer_policy(tmp_path / "looser.yaml", home, tmp_path / "kms1", tmp_path / "host")
    joiner = tmp_path / "kms1"
    command = kms_command(
        joiner, etcd.url(), free_port(), tls.cert.parent, *_join_args(url, looser, tls)
    )
    done = subprocess.run(command, env=kms_env(None), capture_output=True, timeout=120)
    assert done.returncode != 0 and "replica join refused" in done.stderr.decode()
    refusals = [e["claim"] for e in _audit(home) if e["event"] == "replica-join-refused"]
    assert refusals == ["joiner_peer_policy.sim_platform_keys"]
