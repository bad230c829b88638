"""The SDK's bundle fetching: a fresh nonce each time, verified again once too old.

The frontend is played by an httpx mock transport in front of a real KMS service
(simulated evidence): what is under test is what the SDK asks for and when.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from trustserve.attestation import Policy, make_provider
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.keyrelease.bundle import parse_nonce
from trustserve.kms.service import KmsService


def test_each_verification_sends_a_fresh_nonce_and_an_old_target_is_verified_again(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    kms = KmsService(home, KeyFileProtector(key_file), Policy.development(home))
    sim = make_provider("sim", home)
    nonces: list[bytes] = []

    def frontend(request: httpx.Request) -> httpx.Response:
        nonce = parse_nonce(request.url.params.get("nonce"))
        assert nonce is not None
        nonces.append(nonce)
        return httpx.Response(200, json=kms.attestation_bundle(sim, nonce))

    policy = ClientPolicy.development(home, max_bundle_age_s=1.0)
    client = TrustserveClient("http://frontend", policy=policy)
    client._http = httpx.Client(base_url="http://frontend", transport=httpx.MockTransport(frontend))
    with client:
        first = client.verify()
        assert client.verify() is first and len(nonces) == 1
        time.sleep(1.2)
        assert client.verify() is not first
        client.verify(refresh=True)
    assert len(nonces) == 3 and len(set(nonces)) == 3
