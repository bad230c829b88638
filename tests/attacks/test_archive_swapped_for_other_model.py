"""Attack: make a worker obtain model A's key for an archive that is not A's.

The store is untrusted, so its writer can relabel A's encrypted archive as another
model, give another owner's archive A's key id, or edit A's public manifest. The
KMS recorded A's archive digest (manifest, name, version) when it provisioned A's
key and releases that key only to a worker holding an archive with that digest;
each refusal is in the audit log. The worker is the real ``KeyRing`` talking to a
real KMS over HTTPS; its evidence is simulated (no TEE hardware here).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks.kms_fixtures import Genuine, genuine_kms, https_server, throwaway_ca
from tests.support import tiny_manifest, tiny_onnx
from trustserve import archive
from trustserve.crypto import model_encryption
from trustserve.errors import Forbidden
from trustserve.keyrelease.client import KmsClient
from trustserve.kms.app import create_app
from trustserve.worker.keys import KeyRing


@dataclasses.dataclass
class World:
    genuine: Genuine
    ring: KeyRing

    def encrypted(self, name: str, version: str = "1") -> archive.ModelArchive:
        manifest = tiny_manifest(name, version)
        key_id, data_key = self.genuine.service.provision_model_key(manifest)
        blob = model_encryption.encrypt_archive(manifest, tiny_onnx(), data_key, key_id)
        return archive.parse(blob)

    def refusals(self) -> list[dict[str, object]]:
        lines = (self.genuine.home / "kms" / "audit.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == "refusal"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    genuine = genuine_kms(tmp_path / "kms")
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust)
        yield World(genuine, KeyRing(client, genuine.sim))
        client.close()


def relabel(model: archive.ModelArchive, manifest: archive.Manifest) -> archive.ModelArchive:
    return archive.parse(archive.pack(manifest, model.payload, model.encryption))


def test_the_honest_archive_gets_its_key(world: World) -> None:
    a = world.encrypted("alpha")
    assert world.ring.obtain(a) == tiny_onnx()
    assert world.refusals() == []


def test_model_as_archive_relabelled_as_another_model_gets_no_key(world: World) -> None:
    a = world.encrypted("alpha")
    posing = relabel(a, tiny_manifest("beta", "1"))
    with pytest.raises(Forbidden):
        world.ring.obtain(posing)
    [refusal] = world.refusals()
    assert refusal["claim"] == "archive"
    assert world.ring.serving is None and world.ring.broker is None


def test_another_owners_archive_naming_model_as_key_gets_no_key(world: World) -> None:
    a = world.encrypted("alpha")
    b = world.encrypted("beta")
    assert a.encryption is not None and b.encryption is not None
    claiming_a = archive.parse(
        archive.pack(b.manifest, b.payload, {**b.encryption, "key_id": a.encryption["key_id"]})
    )
    with pytest.raises(Forbidden):
        world.ring.obtain(claiming_a)
    [refusal] = world.refusals()
    assert refusal["claim"] == "archive" and a.encryption["key_id"] in str(refusal["detail"])


def test_model_as_archive_with_an_edited_manifest_gets_no_key(world: World) -> None:
    a = world.encrypted("alpha")
    edited = relabel(a, dataclasses.replace(a.manifest, max_batch_size=1, description="edited"))
    with pytest.raises(Forbidden):
        world.ring.obtain(edited)
    assert [r["claim"] for r in world.refusals()] == ["archive"]
