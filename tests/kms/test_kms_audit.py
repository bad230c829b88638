from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kms.conftest import MakeService
from tests.support import tiny_manifest
from trustserve.attestation import EvidenceProvider, Policy
from trustserve.cli import main
from trustserve.errors import Forbidden
from trustserve.keyrelease.protocol import make_request
from trustserve.kms.service import KmsService


@pytest.fixture
def kms(make_service: MakeService, sim: EvidenceProvider) -> KmsService:
    """Six audited events: 3 key creations, a release, a refusal, a rotation."""
    service = make_service(Policy.development())
    ids = [service.create_model_key(tiny_manifest(f"m{i}", "1")) for i in range(3)]
    nonce = base64.b64decode(service.challenge()["nonce"])
    digest = service.state.model_keys()[ids[0]]["digest"]
    _, request = make_request(nonce, sim, ids[:1], {ids[0]: digest})
    service.release(request)
    with pytest.raises(Forbidden):
        service.release(request)
    service.rotate_serving_key()
    return service


def _log(home: Path) -> Path:
    return home / "kms" / "audit.jsonl"


def _edit(home: Path, change: Callable[[list[bytes]], None]) -> None:
    lines = _log(home).read_bytes().splitlines(keepends=True)
    change(lines)
    _log(home).write_bytes(b"".join(lines))


def _reword(line: bytes) -> bytes:
    record = json.loads(line)
    record["time"] += 1
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_untouched_log_verifies(kms: KmsService, home: Path) -> None:
    report = kms.verify_audit()
    assert report.ok and report.lines == 6
    events = [json.loads(x)["event"] for x in _log(home).read_text().splitlines()]
    assert events.count("refusal") == 1 and events.count("release") == 1


@pytest.mark.parametrize("line", [2, 5])
def test_edited_line_is_found(kms: KmsService, home: Path, line: int) -> None:
    def change(lines: list[bytes]) -> None:
        lines[line - 1] = _reword(lines[line - 1])

    _edit(home, change)
    report = kms.verify_audit()
    assert not report.ok and report.line == line


def test_edited_last_line_is_found(kms: KmsService, home: Path) -> None:
    def change(lines: list[bytes]) -> None:
        lines[-1] = _reword(lines[-1])

    _edit(home, change)
    report = kms.verify_audit()
    assert not report.ok and report.line == 6


def test_removed_line_is_found(kms: KmsService, home: Path) -> None:
    _edit(home, lambda lines: lines.pop(2))
    report = kms.verify_audit()
    assert not report.ok and report.line == 3 and "removed" in str(report)


def test_removed_last_line_is_found(kms: KmsService, home: Path) -> None:
    _edit(home, lambda lines: lines.pop())
    report = kms.verify_audit()
    assert not report.ok and "removed from the end" in str(report)


def test_inserted_line_is_found(kms: KmsService, home: Path) -> None:
    def change(lines: list[bytes]) -> None:
        copy = json.loads(lines[3])
        copy["seq"] = 4
        lines.insert(3, json.dumps(copy, sort_keys=True, separators=(",", ":")).encode() + b"\n")

    _edit(home, change)
    report = kms.verify_audit()
    assert not report.ok and report.line == 5 and "inserted" in str(report)


def test_line_appended_without_the_kms_is_found(kms: KmsService, home: Path) -> None:
    def change(lines: list[bytes]) -> None:
        lines.append(_reword(lines[-1]))

    _edit(home, change)
    report = kms.verify_audit()
    assert not report.ok


def test_cli_audit_verify_needs_no_secret_and_reports_tampering(
    kms: KmsService, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = base64.b64encode(kms.state.identity_public_key()).decode()
    verify = ["kms", "audit", "verify", "--home", str(home), "--identity", identity]
    assert main(verify) == 0
    assert "intact: 6 lines" in capsys.readouterr().out
    _edit(home, lambda lines: lines.pop(1))
    assert main(verify) == 1
    assert "line 2" in capsys.readouterr().out


def test_cli_audit_verify_takes_the_identity_from_a_bundle(
    kms: KmsService, home: Path, sim: EvidenceProvider, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(kms.attestation_bundle(sim)))
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps(Policy.development(home).to_json()))
    verify = ["kms", "audit", "verify", "--home", str(home), "--bundle", str(bundle)]
    assert main(verify) == 0
    assert main([*verify, "--policy", str(policy)]) == 0


def test_cli_audit_verify_insists_on_an_expected_identity(
    kms: KmsService, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["kms", "audit", "verify", "--home", str(home)])
    assert exited.value.code == 2
    assert "--identity" in capsys.readouterr().err


def test_cli_identity_prints_the_unlocked_identity(
    kms: KmsService,
    home: Path,
    key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRUSTSERVE_KMS_KEY_FILE", str(key_file))
    monkeypatch.delenv("TRUSTSERVE_KMS_PASSPHRASE", raising=False)
    assert main(["kms", "identity", "--home", str(home)]) == 0
    printed = capsys.readouterr().out.strip()
    assert base64.b64decode(printed) == kms.state.identity_key().public_key().public_bytes_raw()
