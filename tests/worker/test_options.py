"""WorkerOptions: the KMS trust it builds carries the verifier-side sources for a hardware KMS."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trustserve.attestation import Policy
from trustserve.errors import ConfigError
from trustserve.worker.options import WorkerOptions, parser


def kms_policy(tmp_path: Path) -> Path:
    path = tmp_path / "kms-policy.yaml"
    path.write_text(yaml.safe_dump(Policy.default().to_json()))
    return path


def test_collateral_options_reach_the_kms_trust(tmp_path: Path) -> None:
    (tmp_path / "collateral").mkdir()
    argv = [
        "--kms-policy",
        str(kms_policy(tmp_path)),
        "--collateral-dir",
        str(tmp_path / "collateral"),
    ]
    trust = WorkerOptions.from_args(parser().parse_args(argv)).kms_trust()
    assert trust is not None and trust.policy is not None
    assert trust.sources is not None and trust.sources.collateral is not None


def test_without_sources_a_hardware_kms_cannot_be_checked(tmp_path: Path) -> None:
    trust = WorkerOptions(kms_policy=kms_policy(tmp_path)).kms_trust()
    assert trust is not None and trust.sources is not None
    assert trust.sources.collateral is None  # a TDX/SGX KMS's bundle is refused: fail closed


def test_a_collateral_dir_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    opts = WorkerOptions(kms_policy=kms_policy(tmp_path), collateral_dir=tmp_path / "missing")
    with pytest.raises(ConfigError):
        opts.kms_trust()


def test_no_trust_options_no_trust() -> None:
    assert WorkerOptions().kms_trust() is None
