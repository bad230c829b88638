"""Issue 11 item 5 (client side): after a rotation, an old serving-key list stops working.

The frontend is untrusted and can answer the attestation request with any bundle it
once saw. Here it replays a bundle from before a rotation: refused once the signed
list is older than the client's ``max_bundle_age_s`` (a client that trusts evidence
without a time of its own, as TPM and TDX quotes are, had no bound at all before); and
refused at once when the client sent a nonce the replayed evidence does not bind.
The KMS evidence is simulated (no TEE hardware here); it stands in for a KMS the
client trusts, whose evidence carries no usable age (max_evidence_age_s of a day).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from trustserve.attestation import Policy, make_provider
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.verify import verify
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import AttestationRefused
from trustserve.kms.service import KmsService

DAY = 86400.0


class Clock:
    """The KMS's and the client's clock; starts now (sim evidence carries the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kms(tmp_path: Path) -> tuple[KmsService, Clock, Path]:
    """A KMS whose release policy any default client accepts (one TDX set)."""
    home = tmp_path / "home"
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    tdx = {"tee": "tdx", **{k: os.urandom(48).hex() for k in ("mrtd", "rtmr1", "rtmr2", "rtmr3")}}
    clock = Clock()
    service = KmsService(
        home, KeyFileProtector(key_file), Policy.from_mapping({"measurements": [tdx]}), clock=clock
    )
    return service, clock, home


def client_policy(home: Path) -> ClientPolicy:
    return ClientPolicy(replace(Policy.development(home), max_evidence_age_s=DAY))


def test_a_key_list_replayed_after_rotation_is_refused_by_age(
    kms: tuple[KmsService, Clock, Path],
) -> None:
    service, clock, home = kms
    sim = make_provider("sim", home)
    old = service.attestation_bundle(sim)
    old_key = verify(old, client_policy(home), now=clock.now).key_id
    clock.now += 60
    service.rotate_serving_key()
    clock.now += 3600  # the replayed list still lists the old key as current
    with pytest.raises(AttestationRefused) as refused:
        verify(old, client_policy(home), now=clock.now)
    assert refused.value.claim == "issued_at"
    fresh = verify(service.attestation_bundle(sim), client_policy(home), now=clock.now)
    assert fresh.key_id != old_key


def test_a_bundle_not_bound_to_the_clients_nonce_is_refused_and_nothing_is_sent(
    kms: tuple[KmsService, Clock, Path],
) -> None:
    """The SDK against a frontend that answers every attestation request with a bundle
    of its choosing (here: a perfectly fresh one, made for no nonce or for another)."""
    service, _, home = kms
    sim = make_provider("sim", home)
    replayed = service.attestation_bundle(sim)
    other_nonce = service.attestation_bundle(sim, os.urandom(32))
    echoed = dict(other_nonce)
    sent: list[str] = []

    for bundle in (replayed, other_nonce, echoed):

        def frontend(request: httpx.Request, bundle: Any = bundle) -> httpx.Response:
            sent.append(request.url.path)
            if request.url.path == "/v2/trustserve/attestation":
                if bundle is echoed:  # copy the client's nonce into the unbound bundle
                    bundle = {**bundle, "nonce": request.url.params.get("nonce")}
                return httpx.Response(200, json=bundle)
            return httpx.Response(500, json={"error": "the request reached the frontend"})

        client = TrustserveClient("http://frontend", policy=client_policy(home))
        client._http = httpx.Client(
            base_url="http://frontend", transport=httpx.MockTransport(frontend)
        )
        with client, pytest.raises(AttestationRefused) as refused:
            client.infer("m", {"x": np.ones((1, 4), np.float32)})
        assert refused.value.claim in ("nonce", "report_data")
    assert set(sent) == {"/v2/trustserve/attestation"}
