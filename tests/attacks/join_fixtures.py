"""What the KMS join tests share: the running replica, and sim peer policies of named homes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from trustserve.attestation import Policy
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.kms.service import KmsService


def sim_policy(*homes: Path) -> Policy:
    """A policy admitting the sim evidence of ``homes`` only (what a measurement pin does
    on hardware): the first home's development policy, with every home's platform key."""
    keys = tuple(k for h in homes for k in Policy.development(h).sim_platform_keys)
    return replace(Policy.development(homes[0]), sim_platform_keys=keys)


@pytest.fixture
def service(tmp_path: Path) -> KmsService:
    """The running replica on its files (its operator secret a fresh key file); it releases
    to sim evidence of its own home only."""
    key_file = tmp_path / "operator.key"
    create_key_file(key_file)
    home = tmp_path / "kms0"
    return KmsService(home, KeyFileProtector(key_file), Policy.development(home))
