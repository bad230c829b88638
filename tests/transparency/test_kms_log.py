"""The KMS's transparency log: entries written with the changes they record, served over
HTTP with proofs that verify, and carried in the attestation bundle bound by its evidence."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest

from tests.attacks.kms_local import http, local_kms
from tests.support import tiny_manifest
from trustserve.attestation import Policy, make_provider
from trustserve.crypto import merkle
from trustserve.crypto.rootkey import KeyFileProtector
from trustserve.errors import AttestationRefused
from trustserve.keyrelease.bundle import verify_bundle
from trustserve.kms.service import KmsService
from trustserve.transparency import entries as tentries
from trustserve.transparency import note
from trustserve.transparency.log import log_verifier, origin
from trustserve.transparency.note import Checkpoint


def _checkpoint(signed: str, service: KmsService) -> Checkpoint:
    parsed = note.parse(signed)
    key = log_verifier(service.state.identity_public_key())
    assert note.verified_by(parsed, [key]) == [key]
    return Checkpoint.from_text(parsed.text)


def _kinds(service: KmsService) -> list[str]:
    return [e["kind"] for e in service.state.log_view().entries]


def test_every_key_change_is_logged_in_the_same_state_and_never_a_key(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    assert _kinds(kms) == ["serving-key"]  # the initial state's key
    key_id = kms.create_model_key(tiny_manifest())
    kms.rotate_serving_key()
    assert kms.log_release_policy() is True
    assert kms.log_release_policy() is False  # unchanged: not logged again
    assert _kinds(kms) == ["serving-key", "model-key", "serving-key", "release-policy"]
    view = kms.state.log_view()
    model = view.entries[1]
    assert (model["name"], model["version"], model["key_id"]) == ("tiny", "1", key_id)
    data_key = base64.b64encode(kms.model_key(key_id)).decode()
    state_text = json.dumps(view.entries)
    assert data_key not in state_text and "wrapped" not in state_text
    current = kms.state.serving_keys(time.time(), private=False).keys[0]
    assert view.entries[2]["key_id"] == current.key_id
    assert view.entries[3]["sha256"] == tentries.policy_digest(kms.policy.to_json())
    # the same KMS restarted with another policy logs it; with the same one, nothing new
    assert local_kms_again(kms, tmp_path, Policy.default()).log_release_policy() is True
    assert local_kms_again(kms, tmp_path, Policy.default()).log_release_policy() is False
    assert _kinds(kms)[-1] == "release-policy" and len(_kinds(kms)) == 5


def test_a_state_made_before_the_log_gets_one_with_its_keys(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    kms.create_model_key(tiny_manifest())
    path = kms.state.path
    raw = json.loads(path.read_bytes())
    del raw["log"]
    path.write_text(json.dumps(raw))
    reopened = local_kms_again(kms, tmp_path)
    assert [e["kind"] for e in reopened.state.log_view().entries] == ["serving-key", "model-key"]


def local_kms_again(kms: KmsService, tmp_path: Path, policy: Policy | None = None) -> KmsService:
    return KmsService(kms.home, KeyFileProtector(tmp_path / "kms.key"), policy or kms.policy)


async def test_the_routes_serve_a_signed_checkpoint_and_proofs_that_verify(
    tmp_path: Path,
) -> None:
    kms = local_kms(tmp_path)
    for version in ("1", "2", "3"):
        kms.create_model_key(tiny_manifest(version=version))
    kms.rotate_serving_key()
    kms.log_release_policy()
    async with http(kms) as client:
        r = await client.get("/v1/log/checkpoint")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        cp = _checkpoint(r.text, kms)
        assert cp.origin == origin(kms.state.identity_public_key())
        assert cp.size == 6
        page = (await client.get("/v1/log/entries?start=0&end=6")).json()
        assert page["size"] == 6 and [row["index"] for row in page["entries"]] == list(range(6))
        leaves = [merkle.leaf_hash(tentries.encode(row["entry"])) for row in page["entries"]]
        assert merkle.root(leaves) == cp.root
        for i in range(6):
            r = await client.get(f"/v1/log/proof/inclusion?index={i}&size=6")
            proof = [base64.b64decode(p) for p in r.json()["proof"]]
            merkle.verify_inclusion(leaves[i], i, 6, proof, cp.root)
        for old in range(1, 7):
            r = await client.get(f"/v1/log/proof/consistency?old={old}&new=6")
            proof = [base64.b64decode(p) for p in r.json()["proof"]]
            merkle.verify_consistency(old, 6, merkle.root(leaves[:old]), cp.root, proof)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("/v1/log/entries?start=0", "end"),
        ("/v1/log/entries?start=-1&end=1", "start"),
        ("/v1/log/entries?start=1&end=1", "start"),
        ("/v1/log/entries?start=0&end=9", "end"),
        ("/v1/log/entries?start=0&end=99999999999999999999", "end"),
        ("/v1/log/entries?start=x&end=1", "start"),
        ("/v1/log/proof/consistency?old=0&new=1", "old"),
        ("/v1/log/proof/consistency?old=2&new=1", "old"),
        ("/v1/log/proof/consistency?old=1&new=5", "new"),
        ("/v1/log/proof/inclusion?index=0&size=0", "size"),
        ("/v1/log/proof/inclusion?index=3&size=2", "index"),
        ("/v1/log/proof/inclusion?index=0", "size"),
    ],
)
async def test_every_bad_parameter_is_a_400_naming_it(
    tmp_path: Path, query: str, named: str
) -> None:
    kms = local_kms(tmp_path)
    kms.log_release_policy()  # size 2
    async with http(kms) as client:
        r = await client.get(query)
    assert r.status_code == 400, r.text
    assert named in r.json()["error"]


def test_the_bundle_carries_proven_entries_bound_by_its_evidence(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    kms.create_model_key(tiny_manifest())
    sim = make_provider("sim", kms.home)
    bundle = kms.attestation_bundle(sim)
    client_policy = Policy.development(kms.home)
    verified = verify_bundle(bundle, client_policy, time.time())
    assert verified.transparency == bundle["transparency"]
    cp = _checkpoint(bundle["transparency"]["checkpoint"], kms)
    kinds = set()
    for row in bundle["transparency"]["entries"]:
        proof = [base64.b64decode(p) for p in row["proof"]]
        leaf = merkle.leaf_hash(tentries.encode(row["entry"]))
        merkle.verify_inclusion(leaf, row["index"], cp.size, proof, cp.root)
        kinds.add(row["entry"]["kind"])
    assert kinds == {"release-policy", "serving-key", "model-key"}
    policy_rows = [
        r for r in bundle["transparency"]["entries"] if r["entry"]["kind"] == "release-policy"
    ]
    assert policy_rows[0]["entry"]["policy"] == bundle["release_policy"]

    stripped = {k: v for k, v in bundle.items() if k != "transparency"}
    with pytest.raises(AttestationRefused):
        verify_bundle(stripped, client_policy, time.time())
    kms.rotate_serving_key()  # a newer checkpoint, swapped into the old bundle
    newer = kms.attestation_bundle(sim)["transparency"]
    assert newer["checkpoint"] != bundle["transparency"]["checkpoint"]
    with pytest.raises(AttestationRefused):
        verify_bundle({**bundle, "transparency": newer}, client_policy, time.time())


def test_a_restored_state_file_rolls_the_log_back_with_the_keys(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    old = kms.state.path.read_bytes()
    kms.rotate_serving_key()
    assert kms.state.log_view().size == 2
    kms.state.path.write_bytes(old)
    assert kms.state.log_view().size == 1  # one document: the witnesses tell (test_tlog_*)


def test_the_audit_head_is_committed_when_it_changed(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    assert kms.commit_audit_head() is False  # an empty audit log: nothing to commit
    kms.create_model_key(tiny_manifest())
    assert kms.commit_audit_head() is True
    assert kms.commit_audit_head() is False  # unchanged
    entry = kms.state.log_view().entries[-1]
    head = json.loads((kms.state.dir / "audit.head.json").read_text())
    assert (entry["kind"], entry["seq"], entry["hash"]) == ("audit-head", 1, head["sha256"])


def test_the_audit_head_thread_commits_at_its_interval(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    kms.create_model_key(tiny_manifest())
    stop = threading.Event()
    thread = threading.Thread(target=kms.commit_audit_heads, args=(0.05, stop), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while _kinds(kms)[-1] != "audit-head":
            assert time.monotonic() < deadline, "the audit head was never committed"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
