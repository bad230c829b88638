"""Issue 11 item 1: a KMS whose release policy admits workers the client would refuse.

The KMS's own evidence here is simulated and the client's KMS policy accepts it: it
stands in for a hardware KMS the client trusts (no TEE hardware on this machine). The
release policy is what the attack is about: the serving key goes to every worker it
admits, so a client with default worker rules must refuse a permissive one before it
seals anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from trustserve.attestation import Policy, make_provider
from trustserve.client.verify import ClientPolicy, verify
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import AttestationRefused
from trustserve.kms.service import KmsService


def tdx_set() -> dict[str, Any]:
    """A well-formed TDX measurement set (random values: no worker has them)."""
    return {"tee": "tdx", **{k: os.urandom(48).hex() for k in ("mrtd", "rtmr1", "rtmr2", "rtmr3")}}


def some_ak_pin() -> str:
    """The TPM Name (SHA-256) of an AK nobody checked."""
    return "000b" + os.urandom(32).hex()


def bundle_for(tmp_path: Path, release: dict[str, Any]) -> tuple[Any, Path]:
    home = tmp_path / "home"
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    kms = KmsService(home, KeyFileProtector(key_file), Policy.from_mapping(release))
    return kms.attestation_bundle(make_provider("sim", home)), home


def default_client(home: Path) -> ClientPolicy:
    """Trusts this KMS's evidence; every worker rule left at its default."""
    return ClientPolicy(Policy.development(home))


ADVISORIES = ["INTEL-SA-00615", "INTEL-SA-00657"]
# the release policy (beside one TDX set) and the rule that must refuse it
PERMISSIVE: dict[str, tuple[dict[str, Any], str]] = {
    "sim-workers": (
        {"allow_simulated": True, "measurements": [{"tee": "sim"}]},
        "release_policy.allow_simulated",
    ),
    "outdated-tcb-advisories-ak": (
        {
            "accepted_tcb_statuses": ["UpToDate", "OutOfDate"],
            "accepted_advisories": ADVISORIES,
            "tpm_ak_names": [some_ak_pin()],
        },
        "release_policy.accepted_advisories",
    ),
    "outdated-tcb": (
        {"accepted_tcb_statuses": ["UpToDate", "OutOfDate"]},
        "release_policy.accepted_tcb_statuses",
    ),
    "advisories": ({"accepted_advisories": ADVISORIES}, "release_policy.accepted_advisories"),
    "arbitrary-ak-pin": (
        {"tpm_ak_names": [some_ak_pin()]},
        "release_policy.tpm_ak_names",
    ),
    "debug-workers": ({"allow_debug": True}, "release_policy.allow_debug"),
}


@pytest.mark.parametrize(("release", "rule"), PERMISSIVE.values(), ids=PERMISSIVE.keys())
def test_a_default_client_refuses_a_permissive_release_policy(
    tmp_path: Path, release: dict[str, Any], rule: str
) -> None:
    bundle, home = bundle_for(tmp_path, {"measurements": [tdx_set()], **release})
    with pytest.raises(AttestationRefused) as refused:
        verify(bundle, default_client(home))
    assert refused.value.claim == rule


def test_a_strict_release_policy_passes(tmp_path: Path) -> None:
    """The control: the same KMS with a release policy no looser than the client's."""
    bundle, home = bundle_for(tmp_path, {"measurements": [tdx_set()]})
    assert verify(bundle, default_client(home)).key_id
