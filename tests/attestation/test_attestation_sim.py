"""The development-only sim provider: refused unless a policy says allow_simulated."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.base import b64, unb64
from trustserve.attestation.sim_platform import platform_public_key, sim_measurement
from trustserve.errors import AttestationRefused


def allow_sim(home: Path, **extra: object) -> Policy:
    measurement = sim_measurement(platform_public_key(home))
    raw = {
        "allow_simulated": True,
        "measurements": [{"tee": "sim", "sim_measurement": measurement}],
        **extra,
    }
    return Policy.from_yaml(json.dumps(raw))


def test_sim_evidence_is_refused_by_the_default_policy(tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = make_provider("sim", tmp_path).make(nonce)
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, nonce, Policy.default(), time.time())
    assert info.value.claim == "tee"


def test_sim_evidence_is_refused_when_the_policy_lists_it_without_allow_simulated(
    tmp_path: Path,
) -> None:
    nonce = os.urandom(64)
    evidence = make_provider("sim", tmp_path).make(nonce)
    measurement = sim_measurement(platform_public_key(tmp_path))
    policy = Policy.from_yaml(f'measurements: [{{tee: sim, sim_measurement: "{measurement}"}}]')
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, nonce, policy, time.time())
    assert info.value.claim == "tee"


def test_sim_evidence_is_accepted_with_allow_simulated(tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = make_provider("sim", tmp_path).make(nonce)
    claims = verify_evidence(evidence, nonce, allow_sim(tmp_path), time.time())
    assert claims.tee == "sim"
    assert claims.tcb_status == "Simulated"
    assert claims.debug is False
    assert claims.report_data == nonce


def test_the_development_policy_accepts_only_its_own_installation(tmp_path: Path) -> None:
    nonce = os.urandom(32)
    mine = make_provider("sim", tmp_path / "mine").make(nonce)
    theirs = make_provider("sim", tmp_path / "theirs").make(nonce)
    policy = Policy.development(tmp_path / "mine")
    assert verify_evidence(mine, nonce, policy, time.time()).tee == "sim"
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(theirs, nonce, policy, time.time())
    assert info.value.claim == "platform_key"


def test_sim_evidence_for_another_nonce_is_refused(tmp_path: Path) -> None:
    evidence = make_provider("sim", tmp_path).make(os.urandom(64))
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, os.urandom(64), allow_sim(tmp_path), time.time())
    assert info.value.claim == "report_data"


def test_stale_sim_evidence_is_refused(tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = make_provider("sim", tmp_path).make(nonce)
    policy = allow_sim(tmp_path, max_evidence_age_s=60)
    verify_evidence(evidence, nonce, policy, time.time() + 30)
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, nonce, policy, time.time() + 120)
    assert info.value.claim == "issued_at"


def test_tampered_sim_statement_is_refused(tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = make_provider("sim", tmp_path).make(nonce)
    statement = json.loads(unb64(evidence.data["statement"], "statement"))
    statement["report_data"] = os.urandom(64).hex()
    forged = Evidence("sim", {**evidence.data, "statement": b64(json.dumps(statement).encode())})
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(forged, None, allow_sim(tmp_path), time.time())
    assert info.value.claim == "signature"


def test_platform_key_is_private_and_stable(tmp_path: Path) -> None:
    first = make_provider("sim", tmp_path).make(os.urandom(64))
    second = make_provider("sim", tmp_path).make(os.urandom(64))
    assert first.data["public_key"] == second.data["public_key"]
    key_file = tmp_path / "attestation" / "sim_platform_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().hex() not in json.dumps(first.to_json())
