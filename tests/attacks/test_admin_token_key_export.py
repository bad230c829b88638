"""Attack: the KMS management token holder asks for an existing model's key again,
to decrypt that model's archive (the token guards provisioning, not release).

Provisioning always makes a new key: asking for a model version that has one is
409 with no key material, and every provisioning call, refused or not, is in the
audit log. The only way to an existing model key is attested release.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.attacks.kms_fixtures import Genuine, genuine_kms, https_server, throwaway_ca
from tests.support import tiny_manifest
from trustserve.crypto import hpke
from trustserve.encoding import b64
from trustserve.kms.app import admin_token, create_app


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[tuple[Genuine, httpx.Client]]:
    genuine = genuine_kms(tmp_path / "kms")
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        token = admin_token(genuine.service)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, verify=str(tls.ca), headers=headers) as http:
            yield genuine, http


def _provision(http: httpx.Client, name: str) -> httpx.Response:
    _, public = hpke.generate_keypair()
    body = {"manifest": tiny_manifest(name, "1").to_json(), "public_key": b64(public)}
    return http.post("/v1/keys/models", json=body)


def _audit(genuine: Genuine) -> list[dict[str, object]]:
    lines = (genuine.home / "kms" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_token_never_gets_an_existing_model_key(kms: tuple[Genuine, httpx.Client]) -> None:
    genuine, http = kms
    first = _provision(http, "victim")
    assert first.status_code == 200, first.text
    key_id = first.json()["key_id"]

    again = _provision(http, "victim")
    assert again.status_code == 409
    assert "sealed" not in again.json() and "already has a key" in again.json()["error"]
    listed = http.get("/v1/keys/models").json()["keys"][key_id]
    assert "wrapped" not in listed and listed["digest"].startswith("sha256:")

    events = [(e["event"], e["model"]) for e in _audit(genuine) if "model" in e]
    assert events == [("model-key-created", "victim"), ("model-key-refused", "victim")]


def test_every_provisioning_call_is_audited(kms: tuple[Genuine, httpx.Client]) -> None:
    genuine, http = kms
    assert _provision(http, "a").status_code == 200
    assert _provision(http, "b").status_code == 200
    created = [e for e in _audit(genuine) if e["event"] == "model-key-created"]
    assert [e["model"] for e in created] == ["a", "b"]
    assert all(str(e["digest"]).startswith("sha256:") for e in created)
    assert genuine.service.verify_audit().ok
