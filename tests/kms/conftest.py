from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trustserve.attestation import EvidenceProvider, Policy, make_provider
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.kms.service import KmsService

MakeService = Callable[..., KmsService]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "kms.key"
    create_key_file(path)
    return path


@pytest.fixture
def make_service(home: Path, key_file: Path) -> MakeService:
    """A KMS on ``home`` unlocked by a fresh key file; the policy is an argument."""

    def make(policy: Policy | None = None, **options: object) -> KmsService:
        chosen = policy if policy is not None else Policy.development(home)
        return KmsService(home, KeyFileProtector(key_file), chosen, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def sim(home: Path) -> EvidenceProvider:
    """The development ``sim`` provider: no TEE hardware here, and sim is what a dev KMS admits."""
    return make_provider("sim", home)
