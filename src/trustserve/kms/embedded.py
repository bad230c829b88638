"""The KMS that ``trustserve up`` (and ``serve --dev``) runs in-process for development."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from trustserve.attestation import Policy
from trustserve.crypto.rootkey import (
    KEY_FILE_ENV,
    PASSPHRASE_ENV,
    KeyFileProtector,
    create_key_file,
    protector_from_env,
)
from trustserve.home import dev_root_key
from trustserve.kms.service import KmsService

log = logging.getLogger("trustserve.kms")


def development_kms(home: Path, policy: Policy | None = None, **options: Any) -> KmsService:
    """Unlocked by the operator's secret if one is set; else by a key file made beside its state.

    A key file next to the state it protects guards nothing against someone who
    can read the disk: fine for development, and said so loudly.
    """
    if os.environ.get(PASSPHRASE_ENV) or os.environ.get(KEY_FILE_ENV):
        protector = protector_from_env()
    else:
        key_file = dev_root_key(home)
        if not key_file.exists():
            create_key_file(key_file)
        log.warning(
            "development KMS: its root key is wrapped by %s on this disk; set %s or %s "
            "for a deployment",
            key_file,
            PASSPHRASE_ENV,
            KEY_FILE_ENV,
        )
        protector = KeyFileProtector(key_file)
    return KmsService(home, protector, policy or Policy.development(home), **options)
