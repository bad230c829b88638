"""What the client-side transparency attack tests share: a log with a release policy, a
serving key and a model in it, two witnesses the client trusts, and the client's store.

The KMS does not produce the bundle's ``transparency`` field yet (branch tlog-kms builds
it): the log here is built in the test, as the contract says the KMS builds it.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.transparency.tlog_support import (
    TestLog,
    key_entry,
    model_entry,
    new_witness,
    policy_entry,
)
from trustserve.transparency.note import Signer
from trustserve.transparency.store import CheckpointStore
from trustserve.transparency.verify import Relied, verify_transparency
from trustserve.transparency.witness_policy import WitnessPolicy


def serving_key() -> dict[str, Any]:
    return {
        "key_id": os.urandom(8).hex(),
        "public_key": base64.b64encode(os.urandom(32)).decode(),
        "not_after": int(time.time()) + 3600,
    }


@dataclass
class Setting:
    log: TestLog
    witnesses: tuple[Signer, Signer]
    policy: WitnessPolicy
    store: CheckpointStore
    relied: Relied
    indices: list[int]

    def check(self, field: dict[str, Any], log: TestLog | None = None) -> Any:
        source = log or self.log
        return verify_transparency(
            self.log.public, field, self.policy, self.store, source.consistency, self.relied
        )

    def field(self, size: int | None = None, log: TestLog | None = None) -> dict[str, Any]:
        return (log or self.log).field(self.indices, size, self.witnesses)


def setting(tmp_path: Path) -> Setting:
    log = TestLog()
    release = {"allow_simulated": False, "measurements": [{"tee": "sim"}]}
    key = serving_key()
    model = {"name": "resnet", "version": "1", "digest": "sha256:" + os.urandom(32).hex()}
    indices = [
        log.append(policy_entry(release)),
        log.append(key_entry(key)),
        log.append(model_entry(model)),
    ]
    w1, w2 = new_witness("witness.test/w1"), new_witness("witness.test/w2")
    policy = WitnessPolicy((w1.verifier, w2.verifier), quorum=2)
    relied = Relied(release, [key], [model])
    store = CheckpointStore(tmp_path / "home" / "transparency")
    return Setting(log, (w1, w2), policy, store, relied, indices)
