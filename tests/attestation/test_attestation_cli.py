"""``trustserve attest`` and ``trustserve verify`` from the command line, on real evidence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from attestation_data import (
    DATA,
    SGX_MRENCLAVE,
    SGX_TIME,
    TDX_MRTD,
    TDX_SET,
    TDX_TIME,
    collateral_dir,
    quote_evidence,
)

from trustserve.cli import main


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tdx_files(tmp_path: Path) -> tuple[Path, Path]:
    evidence = write(
        tmp_path / "tdx.json", json.dumps(quote_evidence("tdx", "tdx_quote").to_json())
    )
    policy = write(tmp_path / "policy.yaml", f"measurements: [{TDX_SET}]\n")
    return evidence, policy


def test_verify_accepts_the_tdx_quote_at_its_pinned_time(
    tdx_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, policy = tdx_files
    collateral = DATA / "tdx_quote_collateral.json"
    argv = ["verify", str(evidence), "--policy", str(policy), "--collateral", str(collateral)]
    assert main([*argv, "--now", str(TDX_TIME)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "accepted"
    assert out["claims"]["measurements"]["mrtd"] == TDX_MRTD
    assert out["claims"]["tcb_status"] == "UpToDate"


def test_verify_takes_collateral_from_a_directory(
    tdx_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, policy = tdx_files
    directory = collateral_dir(tmp_path)
    argv = ["verify", str(evidence), "--policy", str(policy), "--collateral-dir", str(directory)]
    assert main([*argv, "--now", str(TDX_TIME)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "accepted"
    assert main(argv) == 1  # now: the file has expired
    out = json.loads(capsys.readouterr().out)
    assert out["claim"] == "collateral"
    assert "tdx-b0c06f000000-platform.json expired" in out["detail"]


def test_verify_refuses_the_tdx_quote_now(
    tdx_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, policy = tdx_files
    collateral = DATA / "tdx_quote_collateral.json"
    assert (
        main(["verify", str(evidence), "--policy", str(policy), "--collateral", str(collateral)])
        == 1
    )
    out = json.loads(capsys.readouterr().out)
    assert out == {"verdict": "refused", "claim": "collateral", "detail": out["detail"]}


def test_verify_prints_the_claims_of_a_refused_sgx_quote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evidence = write(
        tmp_path / "sgx.json", json.dumps(quote_evidence("sgx", "sgx_quote").to_json())
    )
    policy = write(
        tmp_path / "p.yaml", f'measurements: [{{tee: sgx, mrenclave: "{SGX_MRENCLAVE}"}}]'
    )
    argv = ["verify", str(evidence), "--policy", str(policy), "--now", str(SGX_TIME)]
    assert main([*argv, "--collateral", str(DATA / "sgx_quote_collateral.json")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["claim"] == "tcb_status"
    assert out["claims"]["advisories"] == ["INTEL-SA-00289", "INTEL-SA-00615"]


def test_verify_exits_2_on_unusable_input(
    tdx_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, policy = tdx_files
    garbage = write(tmp_path / "garbage.json", "{not json")
    assert main(["verify", str(garbage), "--policy", str(policy)]) == 2
    bad_policy = write(tmp_path / "bad.yaml", "allow_everything: true\n")
    assert main(["verify", str(evidence), "--policy", str(bad_policy)]) == 2
    assert "allow_everything" in capsys.readouterr().err


def test_attest_with_sim_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nonce = os.urandom(64).hex()
    out = tmp_path / "evidence.json"
    home = ["--home", str(tmp_path / "home")]
    assert main(["attest", "--provider", "sim", "--report-data", nonce, "-o", str(out), *home]) == 0
    assert "not hardware-protected" in capsys.readouterr().err
    strict = write(tmp_path / "strict.yaml", "")
    assert main(["verify", str(out), "--policy", str(strict), "--report-data", nonce]) == 1
    assert json.loads(capsys.readouterr().out)["claim"] == "tee"
    dev = write(tmp_path / "dev.yaml", "allow_simulated: true\nmeasurements: [{tee: sim}]\n")
    assert main(["verify", str(out), "--policy", str(dev), "--report-data", nonce]) == 0
    assert main(["verify", str(out), "--policy", str(dev), "--report-data", "00" * 64]) == 1


def test_attest_with_swtpm_then_verify(
    swtpm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nonce = os.urandom(64).hex()
    out = tmp_path / "evidence.json"
    argv = ["attest", "--provider", "tpm", "--tcti", swtpm, "--report-data", nonce]
    assert main([*argv, "-o", str(out), "--home", str(tmp_path)]) == 0
    ak_name = capsys.readouterr().err.split("\n")[1]
    pcrs = json.loads(out.read_text())["data"]["pcrs"]
    policy = {"measurements": [{"tee": "tpm", "pcrs": pcrs}], "tpm_ak_names": [ak_name]}
    policy_file = write(tmp_path / "tpm.yaml", json.dumps(policy))
    assert main(["verify", str(out), "--policy", str(policy_file), "--report-data", nonce]) == 0
    assert json.loads(capsys.readouterr().out)["claims"]["tee"] == "tpm"
