"""``trustserve worker --attestation tpm --attestation-option KEY=VALUE``: a real worker process
proves itself to a real KMS (HTTPS, in a thread) with quotes from a real swtpm.

The "model" is random bytes, encrypted: a worker that obtained its key decrypts
it and then stops because it is no ONNX model; what is checked is the attested
key release before that, as the KMS's audit log and the worker's log record it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks.kms_fixtures import https_server
from trustserve import archive
from trustserve.archive import Manifest, TensorSpec
from trustserve.attestation import Policy, make_provider
from trustserve.attestation.registry import parse_options
from trustserve.attestation.verifiers.tpm.verifier import ak_name_of
from trustserve.cli import build_parser
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.encoding import b64
from trustserve.errors import ConfigError
from trustserve.kms.app import create_app
from trustserve.kms.service import KmsService
from trustserve.kms.tools import encrypt_model_file
from trustserve.stack.cli import _settings
from trustserve.tls import issue_local_ca
from trustserve.worker.options import WorkerOptions
from trustserve.worker.options import parser as worker_parser


@pytest.fixture
def kms_home(tmp_path: Path) -> Path:
    return tmp_path / "kms-home"


@contextlib.contextmanager
def serve_kms(service: KmsService, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    app = create_app(service, make_provider("sim", tmp_path / "kms-sim"))
    with https_server(app, tls) as url:
        yield url, tls.ca


def audit_events(kms_home: Path) -> list[dict[str, object]]:
    lines = (kms_home / "kms" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [e for e in events if e.get("event") in ("release", "refusal")]


@pytest.mark.parametrize(
    ("pcrs_option", "released"),
    [("0,1,2,3,4,5,6,7", True), ("0,1,2,3,4,5,6", False)],
    ids=["pinned", "other-pcrs"],
)
def test_worker_passes_its_tpm_options_to_the_provider(
    swtpm: str, tmp_path: Path, kms_home: Path, pcrs_option: str, released: bool
) -> None:
    golden = make_provider("tpm", tmp_path, tcti=swtpm).make(os.urandom(64))  # PCRs 0-7
    policy = Policy.from_mapping(
        {
            "measurements": [{"tee": "tpm", "pcrs": golden.data["pcrs"]}],
            "tpm_ak_names": [ak_name_of(golden)],
        }
    )
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    service = KmsService(kms_home, KeyFileProtector(key_file), policy)
    manifest = Manifest(
        "enc", "1", (TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),)
    )
    plain = tmp_path / "plain.tsm"
    plain.write_bytes(archive.pack(manifest, os.urandom(1000)))
    encrypted = tmp_path / "enc.tsm"
    encrypt_model_file(plain, encrypted, service)
    with serve_kms(service, tmp_path) as (url, ca):
        argv = [sys.executable, "-m", "trustserve.cli", "worker", "--archive", str(encrypted)]
        argv += ["--broker", f"unix:{tmp_path / 'no-broker.sock'}", "--kms", url]
        argv += ["--kms-ca", str(ca), "--home", str(tmp_path / "worker-home")]
        argv += ["--kms-identity", b64(service.state.identity_public_key())]
        argv += ["--provider", "tpm", "--attestation-option", f"tcti={swtpm}"]
        argv += ["--attestation-option", f"pcrs={pcrs_option}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0, done.stderr  # never serves: the model is no model
        [event] = audit_events(kms_home)
        if released:
            assert event["event"] == "release" and event["tee"] == "tpm", event
            assert "model 'enc' does not load" in done.stderr  # decrypted, then not ONNX
        else:
            assert event["event"] == "refusal", event
            assert "key release refused" in done.stderr


def test_serve_gives_its_attestation_options_to_its_provider_and_its_workers(
    swtpm: str, tmp_path: Path
) -> None:
    argv = ["serve", "--home", str(tmp_path), "--provider", "tpm"]
    argv += ["--attestation-option", f"tcti={swtpm}", "--attestation-option", "pcrs=0,7"]
    settings = _settings(build_parser().parse_args(argv))
    provider = make_provider(settings.attestation, settings.home, **settings.attestation_options)
    assert set(provider.make(os.urandom(64)).data["pcrs"]) == {"0", "7"}
    child = WorkerOptions.from_args(worker_parser().parse_args(settings.worker.to_argv()))
    assert child.attestation == "tpm"
    assert parse_options(child.attestation_options) == {"tcti": swtpm, "pcrs": "0,7"}


def test_the_configuration_file_gives_the_tpm_options(swtpm: str, tmp_path: Path) -> None:
    """``attestation: {provider: tpm, options: {...}}`` in trustserve.yaml, as on a vTPM VM."""
    config = tmp_path / "trustserve.yaml"
    config.write_text(
        json.dumps(
            {
                "attestation": {
                    "provider": "tpm",
                    "options": {"tcti": swtpm, "pcrs": "0,7", "ak_cert_nv": "0x01C101D0"},
                }
            }
        )
    )
    args = build_parser().parse_args(["serve", "--home", str(tmp_path), "--config", str(config)])
    settings = _settings(args)
    assert settings.attestation == "tpm"
    assert settings.attestation_options == {
        "tcti": swtpm,
        "pcrs": "0,7",
        "ak_cert_nv": "0x01C101D0",
    }
    child = WorkerOptions.from_args(worker_parser().parse_args(settings.worker.to_argv()))
    assert parse_options(child.attestation_options) == settings.attestation_options
    # The options reach the real provider: it looks for the AK certificate in that index.
    provider = make_provider(settings.attestation, settings.home, **settings.attestation_options)
    with pytest.raises(ConfigError, match="cannot read TPM NV index 0x1c101d0"):
        provider.make(os.urandom(64))
