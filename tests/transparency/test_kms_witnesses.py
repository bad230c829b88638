"""The KMS and a real ``trustserve witness serve`` process: cosignatures collected after each
append and served with the checkpoint, a forgotten witness size recovered from its 409, a
witness that is down only warned of, and ``--witness`` options checked before anything runs."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.attacks.kms_local import http, local_kms
from tests.attacks.tlog_fixtures import WitnessProcess, cosigners, start_witness
from tests.support import free_port, tiny_manifest
from trustserve.attestation import make_provider
from trustserve.attestation.policy import Policy
from trustserve.crypto.rootkey import KEY_FILE_ENV, KeyFileProtector, create_key_file
from trustserve.errors import ConfigError
from trustserve.kms.service import KmsService
from trustserve.kms.witnesses import WitnessConfig, Witnesses
from trustserve.transparency.log import log_verifier
from trustserve.transparency.note import COSIGNATURE_V1, Signer


@pytest.fixture
def kms_and_witness(tmp_path: Path) -> Iterator[tuple[KmsService, WitnessProcess]]:
    key = tmp_path / "kms.key"
    create_key_file(key)
    home = tmp_path / "home"
    kms = KmsService(home, KeyFileProtector(key), Policy.development(home))
    witness = start_witness(
        tmp_path, "witness.test/w1", log_verifier(kms.state.identity_public_key())
    )
    kms.witnesses = Witnesses([WitnessConfig(witness.url, witness.verifier)], 1)
    try:
        yield kms, witness
    finally:
        witness.stop()


async def test_each_append_is_cosigned_and_served_with_the_checkpoint(
    kms_and_witness: tuple[KmsService, WitnessProcess],
) -> None:
    kms, witness = kms_and_witness
    log_key = log_verifier(kms.state.identity_public_key())
    kms.start_log()  # the start-up round, then the policy entry
    kms.create_model_key(tiny_manifest())
    async with http(kms) as client:
        signed = (await client.get("/v1/log/checkpoint")).text
    assert cosigners(signed, [witness.verifier], log_key) == ["witness.test/w1"]
    view = kms.state.log_view()
    assert view.size == 3 and view.witnesses == {"witness.test/w1": 3}
    bundle = kms.attestation_bundle(make_provider("sim", kms.home))
    checkpoint = bundle["transparency"]["checkpoint"]
    assert cosigners(checkpoint, [witness.verifier], log_key) == ["witness.test/w1"]


def test_a_forgotten_witness_size_is_taken_from_its_409(
    kms_and_witness: tuple[KmsService, WitnessProcess],
) -> None:
    kms, _ = kms_and_witness
    kms.start_log()
    kms.state.update(lambda s: s["log"]["witnesses"].clear())  # the KMS forgot
    kms.rotate_serving_key()
    assert kms.state.log_view().witnesses == {"witness.test/w1": 3}
    assert kms.state.log_view().cosignature_lines() != []


def test_a_witness_that_is_down_is_warned_of_not_fatal(
    kms_and_witness: tuple[KmsService, WitnessProcess], caplog: pytest.LogCaptureFixture
) -> None:
    kms, witness = kms_and_witness
    down = Signer("witness.test/w2", COSIGNATURE_V1, Ed25519PrivateKey.generate()).verifier
    kms.witnesses = Witnesses(
        [
            WitnessConfig(witness.url, witness.verifier),
            WitnessConfig(f"http://127.0.0.1:{free_port()}", down),  # nothing listens
        ],
        2,
    )
    with caplog.at_level(logging.WARNING, "trustserve.kms"):
        kms.start_log()
    assert "1 of 2 witnesses cosigned (quorum 2)" in caplog.text
    assert "witness.test/w2: unreachable" in caplog.text
    assert kms.state.log_view().witnesses == {"witness.test/w1": 2}


def test_bad_witness_options_are_refused_by_name(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    log_vkey = log_verifier(kms.state.identity_public_key()).vkey()
    with pytest.raises(ConfigError, match="URL=VKEY"):
        WitnessConfig.parse("no-equals-sign")
    with pytest.raises(ConfigError, match="URL=VKEY"):
        WitnessConfig.parse(f"ftp://x={log_vkey}")
    with pytest.raises(ConfigError, match="not a witness"):
        WitnessConfig.parse(f"http://127.0.0.1:1={log_vkey}")  # a log's key, not a witness's
    with pytest.raises(ConfigError, match=re.escape("http://127.0.0.1:1")):
        WitnessConfig.parse("http://127.0.0.1:1=garbage")
    with pytest.raises(ConfigError, match="--witness-quorum 1"):
        Witnesses([], 1)


def test_a_kms_without_witnesses_submits_nothing(tmp_path: Path) -> None:
    kms = local_kms(tmp_path)
    kms.start_log()
    view = kms.state.log_view()
    assert [e["kind"] for e in view.entries] == ["serving-key", "release-policy"]
    assert view.witnesses == {} and view.cosignature_lines() == []


def test_kms_log_key_prints_the_key_a_witness_is_given(tmp_path: Path) -> None:
    key = tmp_path / "kms.key"
    create_key_file(key)
    home = tmp_path / "home"
    kms = KmsService(home, KeyFileProtector(key), Policy.default())
    printed = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "kms", "log-key", "--home", str(home)],
        env={**os.environ, KEY_FILE_ENV: str(key)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == log_verifier(kms.state.identity_public_key()).vkey()
