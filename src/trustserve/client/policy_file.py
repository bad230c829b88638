"""The client's policy file: the KMS evidence policy, and the optional ``transparency:``
section (``trustserve.transparency.witness_policy``: which witnesses must cosign the KMS's
log checkpoint, and how many). Every other key is the evidence ``Policy``'s."""

from __future__ import annotations

from pathlib import Path

import yaml

from trustserve.attestation import Policy
from trustserve.errors import ConfigError
from trustserve.transparency.witness_policy import SECTION, WitnessPolicy


def read_policy_file(path: Path | str) -> tuple[Policy, WitnessPolicy | None]:
    """(the KMS evidence policy, the witness policy or None) of the client's policy file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy {path} is not valid YAML: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"policy {path} must be a mapping")
    section = raw.pop(SECTION, None)
    witnesses = None if section is None else WitnessPolicy.from_mapping(section)
    return Policy.from_mapping(raw), witnesses
