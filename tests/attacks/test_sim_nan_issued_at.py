"""Not-a-number times: NaN compares false with everything, so it is never "too old".

Before: sim evidence whose signed statement said ``"issued_at": NaN`` (Python's
JSON reads it) passed the freshness rule forever, ``Infinity`` likewise, and an
integer too large for a float crashed the verifier; a policy could say
``max_evidence_age_s: .nan``; a sealed request dated NaN passed the worker's
freshness window. Now each is refused, naming what was wrong.

Sim evidence proves nothing about hardware; what it does prove (integrity and a
fresh time) must still hold, since development stacks and CI rely on it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustserve import __version__
from trustserve.attestation import Evidence, Policy, verify_evidence
from trustserve.attestation.base import b64
from trustserve.attestation.sim_platform import sim_measurement
from trustserve.errors import AttestationRefused, ConfigError, Expired
from trustserve.worker.replay import ReplayGuard

NOW = 1_800_000_000.0


def signed_sim_evidence(key: Ed25519PrivateKey, report_data: bytes, issued_at: Any) -> Evidence:
    """A sim statement exactly as the provider writes it, with ``issued_at`` chosen."""
    public = key.public_key().public_bytes_raw()
    statement = {
        "tee": "sim",
        "report_data": report_data.hex(),
        "issued_at": issued_at,
        "trustserve_version": __version__,
        "sim_measurement": sim_measurement(public),
    }
    body = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return Evidence(
        "sim",
        {"statement": b64(body), "signature": b64(key.sign(body)), "public_key": public.hex()},
    )


@pytest.mark.parametrize("issued_at", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_sim_evidence_with_a_non_finite_time_is_refused(issued_at: Any) -> None:
    key = Ed25519PrivateKey.generate()
    nonce = os.urandom(64)
    policy = Policy.from_mapping(
        {
            "allow_simulated": True,
            "measurements": [{"tee": "sim"}],
            "sim_platform_keys": [key.public_key().public_bytes_raw().hex()],
        }
    )
    # The same key and nonce with a real time are accepted: only the time is wrong.
    verify_evidence(signed_sim_evidence(key, nonce, NOW), nonce, policy, NOW)
    with pytest.raises(AttestationRefused) as refused:
        verify_evidence(signed_sim_evidence(key, nonce, issued_at), nonce, policy, NOW)
    assert refused.value.claim == "issued_at"


@pytest.mark.parametrize("age", [".nan", ".inf", "-.inf"])
def test_a_policy_with_a_non_finite_maximum_age_is_a_configuration_error(age: str) -> None:
    with pytest.raises(ConfigError, match="max_evidence_age_s"):
        Policy.from_yaml(f"max_evidence_age_s: {age}\n")


def test_a_sealed_request_dated_nan_is_outside_the_freshness_window() -> None:
    class Store:
        def first_use(self, nonce: bytes, expires_at: float) -> bool:
            return True

    guard = ReplayGuard(Store(), window_s=300)
    guard.check(NOW - 10, os.urandom(16), NOW)
    for when in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(Expired):
            guard.check(when, os.urandom(16), NOW)
