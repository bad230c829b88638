"""The SDK checks the KMS's transparency log before it sends anything (issue 23).

The frontend is played by an httpx mock transport in front of a real KMS service (simulated
evidence). The KMS does not add the bundle's ``transparency`` field yet (branch tlog-kms
builds it): the test adds it, a log built in the test and signed with that KMS's own identity
key, exactly as the contract says the KMS will. The lead switches these to the real KMS after
merging both branches.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.transparency.tlog_support import (
    TestLog,
    key_entry,
    new_witness,
    policy_entry,
)
from trustserve.attestation import Policy, make_provider
from trustserve.client import verify as client_verify
from trustserve.client.sdk import AsyncTrustserveClient, TrustserveClient
from trustserve.client.verify import ClientPolicy
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import AttestationRefused
from trustserve.keyrelease.bundle import bundle_report_data, parse_nonce
from trustserve.kms.service import KmsService
from trustserve.transparency.note import Signer, parse
from trustserve.transparency.witness_policy import WitnessPolicy


@dataclass
class Frontend:
    """A frontend in front of a real KMS service, adding the log the KMS will add."""

    kms: KmsService
    home: Path
    log: TestLog
    witnesses: tuple[Signer, ...]
    size: int | None = None  # the checkpoint size served (None: the whole log)
    cached: int | None = None  # the size of a cached bundle served without no-cache
    seen: list[str] = field(default_factory=list)

    def bundle(self, nonce: bytes | None, fresh: bool = True) -> dict[str, Any]:
        bundle = self.kms.attestation_bundle(make_provider("sim", self.home), nonce)
        payload = json.loads(base64.b64decode(bundle["serving_keys"]["payload"]))
        if not any(e["kind"] == "release-policy" for e in self.log.entries):
            self.log.append(policy_entry(bundle["release_policy"]))
            for key in payload["keys"]:
                self.log.append(key_entry(key))
        size = self.log.size if self.size is None else self.size
        size = size if fresh or self.cached is None else self.cached
        relied = list(range(min(size, 1 + len(payload["keys"]))))
        bundle["transparency"] = self.log.field(relied, size, self.witnesses)
        return self._bound(bundle, nonce)

    def _bound(self, bundle: dict[str, Any], nonce: bytes | None) -> dict[str, Any]:
        """The KMS's (sim) evidence made again over the bundle with the test's field: on
        branch tlog-kms the evidence binds the checkpoint's text (``checkpoint=``); this
        works before and after that merge."""
        parts: dict[str, Any] = {}
        if "checkpoint" in inspect.signature(bundle_report_data).parameters:
            parts["checkpoint"] = parse(bundle["transparency"]["checkpoint"]).text
        data = bundle_report_data(
            base64.b64decode(bundle["identity_public_key"]),
            bundle["release_policy"],
            base64.b64decode(bundle["serving_keys"]["payload"]),
            bundle["models"],
            nonce,
            **parts,
        )
        evidence = make_provider("sim", self.home).make(data)
        return {**bundle, "evidence": evidence.to_json()}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v2/trustserve/attestation":
            fresh = "no-cache" in request.headers.get("cache-control", "")
            nonce = parse_nonce(request.url.params.get("nonce"))
            return httpx.Response(200, json=self.bundle(nonce, fresh))
        if request.url.path == "/v2/transparency/consistency":
            old, new = int(request.url.params["old"]), int(request.url.params["new"])
            proof = [base64.b64encode(p).decode() for p in self.log.consistency(old, new)]
            return httpx.Response(200, json={"old": old, "new": new, "proof": proof})
        return httpx.Response(503, json={"error": "no worker here", "code": "unavailable"})


@pytest.fixture
def frontend(tmp_path: Path) -> Frontend:
    home = tmp_path / "home"
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    kms = KmsService(home, KeyFileProtector(key_file), Policy.development(home))
    log = TestLog(kms.state.identity_key())
    witnesses = (new_witness("witness.test/w1"), new_witness("witness.test/w2"))
    return Frontend(kms, home, log, witnesses)


def _policy(frontend: Frontend, tmp_path: Path, quorum: int = 2) -> ClientPolicy:
    witnesses = WitnessPolicy(tuple(w.verifier for w in frontend.witnesses), quorum)
    return ClientPolicy.development(
        frontend.home, transparency=witnesses, checkpoints=tmp_path / "client" / "transparency"
    )


def _client(frontend: Frontend, policy: ClientPolicy) -> TrustserveClient:
    client = TrustserveClient("http://frontend", policy=policy)
    client._http = httpx.Client(base_url="http://frontend", transport=httpx.MockTransport(frontend))
    return client


def test_the_sdk_verifies_the_log_and_follows_it_with_consistency_proofs(
    frontend: Frontend, tmp_path: Path
) -> None:
    policy = _policy(frontend, tmp_path)
    with _client(frontend, policy) as client:
        first = client.verify()
        assert first.checkpoint is not None and first.checkpoint.size == 2
        frontend.log.append(policy_entry({"note": "an unrelated later entry"}))
        frontend.log.append(policy_entry({"note": "another"}))
        later = client.verify(refresh=True)
    assert later.checkpoint is not None and later.checkpoint.size == 4
    assert "GET /v2/transparency/consistency" in frontend.seen
    stored = (tmp_path / "client" / "transparency").glob("*.checkpoint")
    assert [p.name for p in stored] == [frontend.log.origin.replace("/", "_") + ".checkpoint"]


def test_a_rolled_back_log_is_refused_before_anything_is_sent(
    frontend: Frontend, tmp_path: Path
) -> None:
    policy = _policy(frontend, tmp_path)
    with _client(frontend, policy) as client:
        client.verify()
        frontend.log.append(policy_entry({"note": "later"}))
        client.verify(refresh=True)
    frontend.size = 2  # the KMS state and its log rolled back to the earlier signed state
    frontend.seen.clear()
    with _client(frontend, policy) as client, pytest.raises(AttestationRefused) as refused:
        client.infer("tiny", {"x": np.zeros((1, 4), np.float32)})
    assert refused.value.claim == "transparency.rollback"
    assert not [s for s in frontend.seen if s.startswith("POST")]


def test_a_frontends_cached_bundle_older_than_the_stored_checkpoint_is_fetched_fresh_once(
    frontend: Frontend, tmp_path: Path
) -> None:
    policy = replace(_policy(frontend, tmp_path), send_nonce=False)
    with _client(frontend, policy) as client:
        client.verify()
        frontend.log.append(policy_entry({"note": "later"}))
        assert client.verify(refresh=True).checkpoint.size == 3  # type: ignore[union-attr]
    frontend.cached = 2  # the frontend's cache predates what this client verified
    frontend.seen.clear()
    with _client(frontend, policy) as client:
        target = client.verify()
    assert target.checkpoint is not None and target.checkpoint.size == 3
    assert frontend.seen.count("GET /v2/trustserve/attestation") == 2


def test_a_checkpoint_lacking_cosignatures_is_refused_before_anything_is_sent(
    frontend: Frontend, tmp_path: Path
) -> None:
    policy = _policy(frontend, tmp_path)
    frontend.witnesses = frontend.witnesses[:1]  # the second one was not shown this view
    with _client(frontend, policy) as client, pytest.raises(AttestationRefused) as refused:
        client.infer("tiny", {"x": np.zeros((1, 4), np.float32)})
    assert refused.value.claim == "transparency.cosignatures"
    assert not [s for s in frontend.seen if s.startswith("POST")]


def test_the_async_client_fetches_the_proof_first_and_refuses_a_fork(
    frontend: Frontend, tmp_path: Path
) -> None:
    policy = _policy(frontend, tmp_path)

    async def run() -> None:
        client = AsyncTrustserveClient("http://frontend", policy=policy)
        transport = httpx.MockTransport(frontend)
        client._http = httpx.AsyncClient(base_url="http://frontend", transport=transport)
        async with client:
            assert (await client.verify()).checkpoint is not None
            frontend.log.append(policy_entry({"note": "later"}))
            target = await client.verify(refresh=True)
            assert target.checkpoint is not None and target.checkpoint.size == 3
            fork = TestLog(frontend.log.identity)
            for entry in frontend.log.entries[:2]:
                fork.append(entry)
            fork.append(policy_entry({"note": "what this client alone is shown"}))
            fork.append(policy_entry({"note": "and more"}))
            frontend.log = fork
            with pytest.raises(AttestationRefused) as refused:
                await client.verify(refresh=True)
            assert refused.value.claim == "transparency.consistency"

    asyncio.run(run())


def test_without_a_transparency_section_the_client_warns_once(
    frontend: Frontend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_verify._warned.clear()
    policy = ClientPolicy.development(frontend.home)
    with (
        caplog.at_level(logging.WARNING, "trustserve.client.verify"),
        _client(frontend, policy) as client,
    ):
        assert client.verify().checkpoint is None
        client.verify(refresh=True)
    warned = [r for r in caplog.records if "transparency log is not checked" in r.message]
    assert len(warned) == 1
