"""Attack: one malformed provisioning request burns a model version for its owner.

``POST /v1/keys/models`` makes a new data key for a model version and HPKE-seals it
to the ``public_key`` in the request. The key was created and stored first and the
recipient key looked at only when sealing: a key of 31 bytes answered 400, an X25519
point of small order (32 zero bytes, for which no shared secret exists) a 500, and
in both cases the version now had a key nobody holds, so every later request for it,
the owner's correct one too, was 409. A typo, or anyone holding the management token
for a moment, made a model version unusable for good. Now the recipient key is
checked (length, a valid X25519 point, not of small order) before anything is
created: a bad request is 400 naming what is wrong, audits nothing as created, and the
version stays available.

The KMS is real (in-process, fresh root key file), reached through its ASGI app.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.attacks.kms_fixtures import Genuine, genuine_kms
from tests.support import tiny_manifest
from trustserve.crypto import hpke
from trustserve.keyrelease.protocol import PROVISION_INFO
from trustserve.kms.app import create_app


@pytest.fixture
async def kms(tmp_path: Path) -> AsyncIterator[tuple[Genuine, httpx.AsyncClient]]:
    genuine = genuine_kms(tmp_path)
    token = secrets.token_urlsafe(16)
    app = create_app(genuine.service, token=token)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://kms", headers=headers
    ) as http:
        yield genuine, http


def _body(public_key: bytes) -> dict[str, object]:
    return {
        "manifest": tiny_manifest("victim", "1").to_json(),
        "public_key": base64.b64encode(public_key).decode(),
    }


@pytest.mark.parametrize(
    ("public_key", "words"),
    [
        (b"\x09" * 31, "32 raw X25519 bytes"),
        (b"\x09" * 33, "32 raw X25519 bytes"),
        (b"", "32 raw X25519 bytes"),
        (bytes(32), "not a valid X25519 key"),  # small order: no shared secret exists
        ((1).to_bytes(32, "little"), "not a valid X25519 key"),  # the point u = 1, order 4
    ],
    ids=["31 bytes", "33 bytes", "empty", "zero point", "order 4 point"],
)
async def test_a_bad_recipient_key_leaves_the_version_available(
    kms: tuple[Genuine, httpx.AsyncClient], public_key: bytes, words: str
) -> None:
    genuine, http = kms
    bad = await http.post("/v1/keys/models", json=_body(public_key))
    assert bad.status_code == 400, bad.text
    assert words in bad.json()["error"]
    assert (await http.get("/v1/keys/models")).json()["keys"] == {}

    private, public = hpke.generate_keypair()
    good = await http.post("/v1/keys/models", json=_body(public))
    assert good.status_code == 200, good.text
    key_id = good.json()["key_id"]
    sealed = base64.b64decode(good.json()["sealed"])
    data_key = hpke.open(private, sealed, aad=key_id.encode(), info=PROVISION_INFO)
    assert data_key == genuine.service.model_key(key_id)

    audit = (genuine.home / "kms" / "audit.jsonl").read_text().splitlines()
    created = [e for e in map(json.loads, audit) if e["event"] == "model-key-created"]
    assert [e["key_id"] for e in created] == [key_id]
