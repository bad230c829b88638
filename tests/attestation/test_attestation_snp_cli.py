"""``trustserve verify`` on the genuine SEV-SNP report: the results issue 13 asks for.

Accepted with its measurement; refused with another measurement, with one flipped
byte, with the VCEK checked against the Genoa root, with a minimum TCB above the
report's, and with ``vmpl: 1`` required. The last test runs the installed
``trustserve`` command in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snp_data import (
    MEASUREMENT,
    NOW,
    OFFSETS,
    REPORT_DATA,
    flip,
    report_bytes,
    snp_evidence,
    snp_set,
)

from trustserve.cli import main


def evidence_file(tmp_path: Path, report: bytes | None = None, vcek: bool = True) -> Path:
    evidence = snp_evidence(report).to_json()
    if not vcek:
        del evidence["data"]["vcek"]
    path = tmp_path / "snp.json"
    path.write_text(json.dumps(evidence))
    return path


def policy_file(tmp_path: Path, **keys: object) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"measurements: [{snp_set(**keys)}]\n")
    return path


def verify(evidence: Path, policy: Path, *extra: str) -> list[str]:
    return [
        "verify", str(evidence), "--policy", str(policy),
        "--report-data", REPORT_DATA.hex(), "--now", str(NOW), *extra,
    ]  # fmt: skip


CASES = {
    "its measurement": ({}, None, [], None),
    "another measurement": ({"measurement": '"' + "ab" * 48 + '"'}, None, [], "measurement"),
    "one flipped byte": ({}, OFFSETS["measurement"], [], "signature"),
    "the Genoa root": ({}, None, ["--snp-product", "genoa"], "chain"),
    "a minimum TCB above": ({"min_tcb": "{snp: 9}"}, None, [], "tcb_snp"),
    "vmpl 1 required": ({"vmpl": 1}, None, [], "vmpl"),
}


@pytest.mark.parametrize("case", CASES)
def test_verify_gives_the_issue_s_results_on_the_genuine_report(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, flipped, extra, claim = CASES[case]
    report = None if flipped is None else flip(report_bytes(), flipped)
    argv = verify(evidence_file(tmp_path, report), policy_file(tmp_path, **keys), *extra)
    assert main(argv) == (0 if claim is None else 1)
    out = json.loads(capsys.readouterr().out)
    if claim is None:
        assert out["verdict"] == "accepted"
        assert out["claims"]["measurements"]["measurement"] == MEASUREMENT
    else:
        assert (out["verdict"], out["claim"]) == ("refused", claim)


def test_verify_refuses_other_report_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = verify(evidence_file(tmp_path), policy_file(tmp_path))
    argv[argv.index("--report-data") + 1] = "00" * 64
    assert main(argv) == 1
    assert json.loads(capsys.readouterr().out)["claim"] == "report_data"


def test_verify_takes_the_vcek_from_a_cache_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "vceks"
    cache.mkdir()
    shutil.copy(Path(__file__).parent.parent / "data/attestation/snp/vcek_milan.der", cache)
    evidence = evidence_file(tmp_path, vcek=False)
    assert main(verify(evidence, policy_file(tmp_path), "--vcek-dir", str(cache))) == 0
    assert main(verify(evidence, policy_file(tmp_path))) == 2
    assert "no 'vcek'" in capsys.readouterr().err


def test_the_installed_trustserve_verify_command(tmp_path: Path) -> None:
    """The real console script, in its own process: exit codes and JSON on stdout."""
    script = Path(sys.executable).parent / "trustserve"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "trustserve.cli"]
    evidence = evidence_file(tmp_path)
    accepted = subprocess.run(
        [*command, *verify(evidence, policy_file(tmp_path))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["claims"]["measurements"]["measurement"] == MEASUREMENT
    genoa = subprocess.run(
        [*command, *verify(evidence, policy_file(tmp_path), "--snp-product", "genoa")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert genoa.returncode == 1, genoa.stderr
    assert json.loads(genoa.stdout)["claim"] == "chain"
