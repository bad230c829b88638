"""docs/deploy.md's high-availability try-out: two KMS replicas on one etcd, the second with
no operator secret joining the first by attestation, run as the document writes them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.docs.blocks import ROOT, DocShell, http_ok, marked_blocks
from tests.kms.etcd_cluster import EtcdCluster, etcd
from tests.support import free_port

__all__ = ["etcd"]  # the fixture
DOC = ROOT / "docs" / "deploy.md"


def test_a_second_kms_replica_joins_the_first_as_documented(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    blocks = marked_blocks(DOC, {"ha-peer-policy", "ha-kms-0", "ha-kms-1"})
    work = tmp_path / "work"
    work.mkdir()
    ports = [free_port(), free_port()]
    shell = DocShell(
        cwd=work,
        home=tmp_path / "home",
        substitutions={
            "--port 8443": f"--port {ports[0]}",
            "--port 8444": f"--port {ports[1]}",
            "https://localhost:8443": f"https://localhost:{ports[0]}",
        },
        env={"ETCD": etcd.url()},
    )
    shell.run(blocks["ha-peer-policy"])
    try:
        for i, name in enumerate(("ha-kms-0", "ha-kms-1")):
            ca = str(work / f"kms-{i}" / "tls" / "ca.pem")
            shell.start(blocks[name], http_ok(f"https://localhost:{ports[i]}/healthz", ca))
        identities = [
            httpx.get(
                f"https://localhost:{port}/v1/attestation",
                verify=str(work / f"kms-{i}" / "tls" / "ca.pem"),
                timeout=30,
            ).json()["identity_public_key"]
            for i, port in enumerate(ports)
        ]
    finally:
        shell.stop()
    assert identities[0] == identities[1]
    audit = (work / "kms-0" / "kms" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in audit].count("replica-join") == 1
    tokens = [(work / f"kms-{i}" / "kms" / "admin.token").read_text() for i in (0, 1)]
    assert tokens[0] == tokens[1]
    assert not (work / "kms-1" / "kms" / "root-key.json").exists()
