"""The KMS over real TLS on 127.0.0.1 (uvicorn in a thread), driven by ``KmsClient``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.attacks.kms_fixtures import https_server
from tests.kms.conftest import MakeService
from tests.support import tiny_manifest
from trustserve import archive
from trustserve.archive import Manifest, TensorSpec
from trustserve.attestation import EvidenceProvider, Policy
from trustserve.crypto.model_encryption import decrypt_archive
from trustserve.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthorized, Unavailable
from trustserve.keyrelease.bundle import verify_bundle
from trustserve.keyrelease.client import KmsClient, fetch_model_key
from trustserve.keyrelease.protocol import model_digest
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.app import admin_token, create_app
from trustserve.kms.service import KmsService
from trustserve.kms.tools import encrypt_model_file
from trustserve.tls import issue_local_ca


def _throwaway_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for 127.0.0.1, made for this test only."""
    files = issue_local_ca(directory, ["127.0.0.1"])
    return files.ca, files.cert, files.key


@dataclass
class Running:
    url: str
    ca: Path
    token: str
    service: KmsService


@pytest.fixture
def running(make_service: MakeService, sim: EvidenceProvider, tmp_path: Path) -> Iterator[Running]:
    service = make_service(Policy.development())
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    with https_server(create_app(service, sim), tls) as url:
        yield Running(url, tls.ca, admin_token(service), service)


def _trust(running: Running) -> KmsTrust:
    return KmsTrust(running.service.state.identity_public_key())


def test_release_over_tls(running: Running, sim: EvidenceProvider) -> None:
    manifest = tiny_manifest("m", "1")
    key_id = running.service.create_model_key(manifest)
    held = archive.ModelArchive(manifest, {"key_id": key_id}, b"", b"")
    with KmsClient(running.url, ca_file=running.ca, trust=_trust(running)) as client:
        keys = client.release(sim, [key_id, "broker"], {key_id: model_digest(manifest)})
        assert keys[key_id] == running.service.model_key(key_id)
        assert fetch_model_key(client, sim, held) == keys[key_id]
        with pytest.raises(NotFound):
            client.release(sim, ["model-unknown-1-00000000"])


def test_release_needs_a_trusted_identity(running: Running, sim: EvidenceProvider) -> None:
    client = KmsClient(running.url, ca_file=running.ca)
    with client, pytest.raises(ConfigError, match="--kms-identity"):
        client.release(sim, ["broker"])


def test_identity_from_a_bundle_verified_under_the_requesters_policy(
    running: Running, sim: EvidenceProvider, home: Path
) -> None:
    trusting = KmsTrust(policy=Policy.development(home))
    with KmsClient(running.url, ca_file=running.ca, trust=trusting) as client:
        assert len(client.release(sim, ["broker"])["broker"]) == 32
    strict = KmsTrust(policy=Policy.default())  # refuses the KMS's sim evidence
    refusing = KmsClient(running.url, ca_file=running.ca, trust=strict)
    with refusing, pytest.raises(Forbidden, match="tee"):
        refusing.release(sim, ["broker"])


def test_refusal_over_tls_is_a_bare_403(running: Running, sim: EvidenceProvider) -> None:
    key_id = running.service.create_model_key(tiny_manifest("m", "1"))
    running.service.policy = Policy.default()
    trust = _trust(running)
    with (
        KmsClient(running.url, ca_file=running.ca, trust=trust) as client,
        pytest.raises(Forbidden) as refused,
    ):
        client.release(sim, [key_id])
    assert str(refused.value) == "KMS: key release refused"


def test_client_refuses_a_server_outside_its_ca(running: Running, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = _throwaway_ca(other)
    with KmsClient(running.url, ca_file=other_ca) as client, pytest.raises(Unavailable) as failed:
        client.attestation_bundle()
    # refused as an untrusted certificate (not "unreachable"), and the fix is named
    assert "is not trusted" in str(failed.value) and "pass --ca" in str(failed.value)


def test_owner_encrypts_and_worker_opens_over_tls(
    running: Running, sim: EvidenceProvider, tmp_path: Path, home: Path
) -> None:
    manifest = Manifest(
        "enc", "3", (TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),)
    )
    model = os.urandom(300_000)
    plain = tmp_path / "plain.tsm"
    plain.write_bytes(archive.pack(manifest, model))
    encrypted = tmp_path / "enc.tsm"
    with KmsClient(running.url, ca_file=running.ca, token=running.token) as owner:
        key_id = encrypt_model_file(plain, encrypted, owner)
        with pytest.raises(Conflict):
            encrypt_model_file(plain, tmp_path / "again.tsm", owner)
    assert archive.read_header(encrypted).encryption == {
        "scheme": "tink-streaming-aead/AES256_GCM_HKDF_1MB",
        "key_id": key_id,
    }
    assert model[:4096] not in encrypted.read_bytes()
    with KmsClient(running.url, ca_file=running.ca, trust=_trust(running)) as worker:
        held = archive.load(encrypted)
        assert decrypt_archive(held, fetch_model_key(worker, sim, held)) == model
        bundle = worker.attestation_bundle()
    checked = verify_bundle(bundle, Policy.development(home), time.time())
    assert checked.claims.tee == "sim" and checked.keys
    assert [m["name"] for m in checked.models] == [manifest.name]


def test_management_needs_the_token(running: Running) -> None:
    with KmsClient(running.url, ca_file=running.ca, token="not-the-token") as client:
        with pytest.raises(Unauthorized):
            client.provision_model_key(tiny_manifest("m", "1"))
        with pytest.raises(Unauthorized):
            client.rotate_serving_key()
    with KmsClient(running.url, ca_file=running.ca, token=running.token) as client:
        assert client.rotate_serving_key()["key_id"].startswith("srv-")
