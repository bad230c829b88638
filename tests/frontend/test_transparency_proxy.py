"""The frontend passes the KMS's log checkpoint and consistency proofs on, unchanged.

The KMS side of these routes is being built on branch tlog-kms: the KMS here is the
stand-in of tests/transparency/log_server.py (a real loopback HTTP server serving the
contract's routes); the frontend reaches it through its real ``KmsClient``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from tests.transparency.log_server import LogView, serving
from tests.transparency.tlog_support import TestLog, new_witness, policy_entry
from trustserve.attestation import make_provider
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.crypto import merkle
from trustserve.frontend.dataplane import DataPlane
from trustserve.frontend.inference import InferenceApi
from trustserve.frontend.keys import FrontendKeys
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.trust import KmsTrust
from trustserve.transparency.note import Checkpoint, parse


def _frontend(tmp_path: Path, kms_url: str, identity: bytes) -> httpx.AsyncClient:
    kms = KmsClient(kms_url, trust=KmsTrust(identity=identity))
    keys = FrontendKeys(kms, make_provider("sim", tmp_path / "home"))
    plane = DataPlane(ModelRegistry(tmp_path), EmbeddedBroker(), Metrics(), timeout_s=5, keys=keys)
    app = InferenceApi(plane, max_body_bytes=1 << 20).app()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://frontend")


async def test_checkpoint_and_consistency_proofs_reach_the_client_unchanged(
    tmp_path: Path,
) -> None:
    log = TestLog()
    for n in range(7):
        log.append(policy_entry({"max_evidence_age_s": n + 1}))
    view = LogView(log, (new_witness("witness.test/w1"),))
    with serving(view) as url:
        async with _frontend(tmp_path, url, log.public) as frontend:
            r = await frontend.get("/v2/transparency/checkpoint")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            checkpoint = Checkpoint.from_text(parse(r.text).text)
            assert (checkpoint.size, checkpoint.root) == (7, merkle.root(log.leaves()))
            assert len(parse(r.text).signatures) == 2  # the KMS's and the witness's
            r = await frontend.get("/v2/transparency/consistency?old=3&new=7")
            assert r.status_code == 200
            proof = [base64.b64decode(p) for p in r.json()["proof"]]
            old_root = merkle.root(log.leaves(3))
            merkle.verify_consistency(3, 7, old_root, checkpoint.root, proof)


async def test_bad_sizes_are_refused_with_what_was_wrong(tmp_path: Path) -> None:
    log = TestLog()
    log.append(policy_entry({}))
    with serving(LogView(log)) as url:
        async with _frontend(tmp_path, url, log.public) as frontend:
            for query in ("old=1", "old=x&new=1", "old=1&new=-1", "old=01&new=1"):
                r = await frontend.get(f"/v2/transparency/consistency?{query}")
                assert r.status_code == 400 and "log size" in r.json()["error"], query
            r = await frontend.get("/v2/transparency/consistency?old=1&new=9")
            assert r.status_code == 400 and "outside" in r.json()["error"]  # the KMS's answer


async def test_an_unreachable_kms_is_a_503(tmp_path: Path) -> None:
    log = TestLog()
    with serving(LogView(log)) as url:
        pass  # stopped: nothing listens there any more
    async with _frontend(tmp_path, url, log.public) as frontend:
        r = await frontend.get("/v2/transparency/checkpoint")
        assert r.status_code == 503
