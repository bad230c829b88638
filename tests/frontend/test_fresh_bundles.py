"""A frontend binds the nonces of concurrent clients into one piece of KMS evidence.

A genuine KMS over real HTTPS (sim evidence: no TEE hardware here); each client
checks the bundle it gets exactly as the SDK does, with its own nonce.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.attacks.kms_fixtures import genuine_kms, https_server, throwaway_ca
from trustserve.attestation import Evidence, EvidenceProvider
from trustserve.client.verify import ClientPolicy, verify
from trustserve.errors import AttestationRefused
from trustserve.frontend.keys import FrontendKeys
from trustserve.keyrelease.client import KmsClient
from trustserve.kms.app import create_app


@dataclass
class Counting:
    """The KMS's real (sim) provider, counting the evidence it makes."""

    inner: EvidenceProvider
    made: list[bytes] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def make(self, report_data: bytes) -> Evidence:
        self.made.append(report_data)
        return self.inner.make(report_data)


async def test_concurrent_clients_share_one_piece_of_evidence_each_bound_to_its_nonce(
    tmp_path: Path,
) -> None:
    genuine = genuine_kms(tmp_path)
    counting = Counting(genuine.sim)
    policy = ClientPolicy.development(genuine.home)
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(create_app(genuine.service, counting), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust)
        keys = FrontendKeys(client, genuine.sim)
        nonces = [os.urandom(32) for _ in range(200)]  # more than one client's KMS budget
        bundles = await asyncio.gather(*(keys.bundle(nonce=n) for n in nonces))
        client.close()
    for nonce, bundle in zip(nonces, bundles, strict=True):
        assert verify(bundle, policy, nonce=nonce).key_id
    assert len(counting.made) < 20  # one per batch, not one per client
    with pytest.raises(AttestationRefused) as refused:
        verify(bundles[0], policy, nonce=nonces[1])  # another client's proof
    assert refused.value.claim == "nonce"
    tampered = {**bundles[3], "nonce_batch": {**bundles[3]["nonce_batch"], "leaf_index": 4}}
    with pytest.raises(AttestationRefused):
        verify(tampered, policy, nonce=nonces[3])


async def test_a_busy_frontend_keeps_within_its_kms_budget_instead_of_being_refused(
    tmp_path: Path,
) -> None:
    genuine = genuine_kms(tmp_path)
    policy = ClientPolicy.development(genuine.home)
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust)
        keys = FrontendKeys(client, genuine.sim)
        for _ in range(15):  # more batches in a row than the KMS's per-client burst (10)
            nonces = [os.urandom(32) for _ in range(5)]
            bundles = await asyncio.gather(*(keys.bundle(nonce=n) for n in nonces))
            for nonce, bundle in zip(nonces, bundles, strict=True):
                assert verify(bundle, policy, nonce=nonce).key_id
        client.close()
