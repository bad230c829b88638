"""A worker counts its serving-key refreshes by result, for the metrics: against a real KMS
(in process, over HTTPS, simulated attestation) that answers, then refuses, then is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.attacks.kms_fixtures import genuine_kms, https_server, throwaway_ca, tiny_encrypted
from trustserve.attestation import Policy
from trustserve.errors import Forbidden, Unavailable
from trustserve.keyrelease.client import KmsClient
from trustserve.kms.app import create_app
from trustserve.worker.keys import KeyRing


async def test_refreshes_are_counted_by_result_and_drained_once(tmp_path: Path) -> None:
    genuine = genuine_kms(tmp_path / "kms")
    held = tiny_encrypted(genuine)
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust)
        ring = KeyRing(client, genuine.sim)
        await asyncio.to_thread(ring.obtain, held)
        assert ring.drain_refreshes() is None  # the start-up release is not a refresh
        await asyncio.to_thread(ring.refresh)
        await asyncio.to_thread(ring.refresh)
        assert ring.drain_refreshes() == {"ok": 2}
        assert ring.drain_refreshes() is None
        genuine.service.policy = Policy.default()  # sim evidence no longer admitted
        with pytest.raises(Forbidden):
            await asyncio.to_thread(ring.refresh)
    with pytest.raises(Unavailable):  # the KMS is gone
        await asyncio.to_thread(ring.refresh)
    client.close()
    assert ring.drain_refreshes() == {"refused": 1, "failed": 1}
