"""``trustserve policy``: release policies written from genuine quotes, sigstructs, TPM evidence.

The policies it writes are loaded back with ``Policy.from_yaml`` and, for the genuine
Intel quotes of tests/data/attestation, used to verify those very quotes through
dcap-qvl at the fixtures' pinned times: what the command pins is what the verifier
checks. The SIGSTRUCT is built here the way an SGX signer builds it (RSA-3072,
exponent 3, PKCS#1 v1.5 SHA-256), since no Gramine signer can run on this machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

import pytest
from attestation_data import fixed
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from snp_data import MEASUREMENT as SNP_MEASUREMENT
from snp_data import NOW as SNP_NOW
from snp_data import REPORT_DATA as SNP_REPORT_DATA
from snp_data import snp_evidence

from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.formats.sigstruct import HEADER, HEADER2, SIZE
from trustserve.cli import main
from trustserve.errors import AttestationRefused

DATA = Path(__file__).parent.parent / "data" / "attestation"
TDX_TIME, SGX_TIME = 1750331763, 1750334171
SGX_STATUS = ["--accept-tcb-status", "ConfigurationAndSWHardeningNeeded"]
SGX_ADVISORIES = ["--accept-advisory", "INTEL-SA-00289", "--accept-advisory", "INTEL-SA-00615"]
# every sev-snp set states the default it is judged by: no migration agent
MIGRATE_MA_REFUSED = {"guest_policy": {"migrate_ma": False}}


def policy_cmd(tmp_path: Path, *args: str) -> Policy:
    out = tmp_path / "policy.yaml"
    assert main(["policy", *args, "-o", str(out)]) == 0
    return Policy.from_yaml(out.read_text())


def sets(policy: Policy) -> list[dict[str, object]]:
    return [m.to_json() for m in policy.measurements]


def quote_evidence(kind: str, name: str) -> Evidence:
    return Evidence(kind, {"quote": base64.b64encode((DATA / name).read_bytes()).decode()})


# ---- TDX and SGX from genuine quotes ----


def test_tdx_quote_gives_mrtd_and_rtmr1_to_3_that_accept_that_quote(tmp_path: Path) -> None:
    policy = policy_cmd(tmp_path, "--tdx-quote", str(DATA / "tdx_quote"))
    (tdx,) = sets(policy)
    assert {"mrtd", "rtmr1", "rtmr2", "rtmr3"} <= set(tdx) and "rtmr0" not in tdx
    assert str(tdx["mrtd"]).startswith("91eb2b44d141d4ec")
    evidence = quote_evidence("tdx", "tdx_quote")
    claims = verify_evidence(evidence, None, policy, TDX_TIME, sources=fixed("tdx_quote"))
    assert claims.measurements["rtmr2"] == tdx["rtmr2"]


def test_tdx_policy_from_one_quote_refuses_another_td(tmp_path: Path) -> None:
    quote = str(DATA / "tdx_quote")
    policy = policy_cmd(
        tmp_path, "--tdx-quote", quote, "--tdx-also", "rtmr0", "--tdx-also", "mr_config_id"
    )
    assert {"rtmr0", "mr_config_id"} <= set(sets(policy)[0])
    other = dict(sets(policy)[0], rtmr3="ab" * 48)
    mutated = Policy.from_mapping({"measurements": [other]})
    with pytest.raises(AttestationRefused) as refused:
        verify_evidence(
            quote_evidence("tdx", "tdx_quote"), None, mutated, TDX_TIME,
            sources=fixed("tdx_quote"),
        )  # fmt: skip
    assert refused.value.claim == "rtmr3"


def test_sgx_quote_gives_its_mrenclave_and_the_quote_verifies_under_it(tmp_path: Path) -> None:
    evidence_file = tmp_path / "sgx.json"  # the JSON `trustserve attest` writes works too
    evidence_file.write_text(json.dumps(quote_evidence("sgx", "sgx_quote").to_json()))
    policy = policy_cmd(tmp_path, "--sgx-quote", str(evidence_file), *SGX_STATUS, *SGX_ADVISORIES)
    (sgx,) = sets(policy)
    assert sgx["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    verify_evidence(
        quote_evidence("sgx", "sgx_quote"), None, policy, SGX_TIME,
        sources=fixed("sgx_quote"),
    )  # fmt: skip


def test_sgx_by_signer_pins_signer_product_and_minimum_svn(tmp_path: Path) -> None:
    policy = policy_cmd(tmp_path, "--sgx-quote", str(DATA / "sgx_quote"), "--sgx-by-signer")
    assert sets(policy) == [
        {
            "tee": "sgx",
            "mrsigner": "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
            "isv_prod_id": 0,
            "isv_svn_min": 0,
        }
    ]


def test_a_quote_of_the_wrong_tee_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "--tdx-quote", str(DATA / "sgx_quote")]) == 2
    assert "is not a TDX quote" in capsys.readouterr().err


# ---- SGX from a Gramine sigstruct ----


def make_sigstruct(
    mrenclave: bytes, prod_id: int = 7, svn: int = 3, debug: bool = False
) -> tuple[bytes, str]:
    """A SIGSTRUCT signed like gramine-sgx-sign does, and the MRSIGNER it must yield."""
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    n = key.public_key().public_numbers().n
    modulus = n.to_bytes(384, "little")
    data = bytearray(SIZE)
    data[0:16], data[24:40] = HEADER, HEADER2
    data[20:24] = struct.pack("<I", 0x20260101)  # date, BCD
    data[128:512], data[512:516] = modulus, struct.pack("<I", 3)
    data[928] = 0x04 | (0x02 if debug else 0)  # ATTRIBUTES: MODE64BIT (+ DEBUG)
    data[944:960] = b"\xff" * 16  # ATTRIBUTEMASK
    data[960:992] = mrenclave
    struct.pack_into("<HH", data, 1024, prod_id, svn)
    signature = key.sign(bytes(data[0:128] + data[900:1028]), padding.PKCS1v15(), hashes.SHA256())
    s = int.from_bytes(signature, "big")
    q1 = s * s // n
    q2 = (s * s * s - q1 * s * n) // n
    data[516:900] = s.to_bytes(384, "little")
    data[1040:1424], data[1424:1808] = q1.to_bytes(384, "little"), q2.to_bytes(384, "little")
    return bytes(data), hashlib.sha256(modulus).hexdigest()


def test_sigstruct_gives_mrenclave_and_mrsigner(tmp_path: Path) -> None:
    mrenclave = hashlib.sha256(tmp_path.name.encode()).digest()
    data, mrsigner = make_sigstruct(mrenclave)
    (tmp_path / "worker.sig").write_bytes(data)
    policy = policy_cmd(tmp_path, "--sigstruct", str(tmp_path / "worker.sig"))
    assert sets(policy) == [{"tee": "sgx", "mrenclave": mrenclave.hex(), "mrsigner": mrsigner}]
    by_signer = policy_cmd(tmp_path, "--sigstruct", str(tmp_path / "worker.sig"), "--sgx-by-signer")
    assert sets(by_signer) == [
        {"tee": "sgx", "mrsigner": mrsigner, "isv_prod_id": 7, "isv_svn_min": 3}
    ]


@pytest.mark.parametrize(
    ("offset", "why"),
    [(962, "signature"), (1025, "signature"), (300, "signature"), (0, "headers")],
)
def test_an_altered_sigstruct_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offset: int, why: str
) -> None:
    """Flip one byte (MRENCLAVE, ISVPRODID, the modulus, the header): no policy is written."""
    data = bytearray(make_sigstruct(bytes(32))[0])
    data[offset] ^= 0x01
    (tmp_path / "bad.sig").write_bytes(bytes(data))
    assert (
        main(["policy", "--sigstruct", str(tmp_path / "bad.sig"), "-o", str(tmp_path / "p")]) == 2
    )
    assert why in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_debug_enclave_needs_allow_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "debug.sig").write_bytes(make_sigstruct(bytes(32), debug=True)[0])
    assert main(["policy", "--sigstruct", str(tmp_path / "debug.sig")]) == 2
    assert "debug mode" in capsys.readouterr().err
    policy = policy_cmd(tmp_path, "--sigstruct", str(tmp_path / "debug.sig"), "--allow-debug")
    assert policy.allow_debug


# ---- TDX by value, SNP, TPM ----


def test_tdx_values_given_as_flags_must_name_the_whole_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {
        f"--tdx-{n}": hashlib.sha384(n.encode()).hexdigest()
        for n in ("mrtd", "rtmr1", "rtmr2", "rtmr3")
    }
    flat = [x for kv in values.items() for x in kv]
    (tdx,) = sets(policy_cmd(tmp_path, *flat))
    assert tdx["rtmr2"] == values["--tdx-rtmr2"]
    assert main(["policy", *flat[:-2]]) == 2
    assert "--tdx-rtmr3" in capsys.readouterr().err


def test_snp_needs_sev_snp_measure_to_compute_a_measurement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sevsnpmeasure", None)  # as if not installed
    (tmp_path / "OVMF.fd").write_bytes(b"")
    assert main(["policy", "--snp-ovmf", str(tmp_path / "OVMF.fd")]) == 2
    assert "sev-snp-measure" in capsys.readouterr().err


def test_a_file_that_is_no_sev_firmware_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real sev-snp-measure reads it and finds no OVMF footer table: a clear error."""
    pytest.importorskip("sevsnpmeasure")
    ovmf = tmp_path / "not-ovmf.fd"
    ovmf.write_bytes(hashlib.sha512(tmp_path.name.encode()).digest() * 1024)
    assert main(["policy", "--snp-ovmf", str(ovmf), "--snp-vcpus", "2"]) == 2
    assert f"cannot compute the SNP measurement from {ovmf}" in capsys.readouterr().err


def test_snp_measurement_must_be_48_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "--snp-measurement", "ab" * 32]) == 2
    assert "48 bytes" in capsys.readouterr().err


def test_snp_measurement_becomes_an_snp_set(tmp_path: Path) -> None:
    measurement = hashlib.sha384(tmp_path.name.encode()).hexdigest()
    policy = policy_cmd(tmp_path, "--snp-measurement", measurement.upper())
    assert sets(policy) == [{"tee": "sev-snp", "measurement": measurement, **MIGRATE_MA_REFUSED}]
    host_data = hashlib.sha256(measurement.encode()).hexdigest()
    policy = policy_cmd(tmp_path, "--snp-measurement", measurement, "--snp-host-data", host_data)
    assert sets(policy)[0]["host_data"] == host_data


def test_snp_report_gives_its_measurement_and_the_report_verifies_under_it(tmp_path: Path) -> None:
    evidence = tmp_path / "snp.json"
    evidence.write_text(json.dumps(snp_evidence().to_json()))
    policy = policy_cmd(tmp_path, "--snp-report", str(evidence))
    assert sets(policy) == [
        {"tee": "sev-snp", "measurement": SNP_MEASUREMENT, **MIGRATE_MA_REFUSED}
    ]
    verify_evidence(snp_evidence(), SNP_REPORT_DATA, policy, SNP_NOW)


def test_tpm_evidence_gives_its_pcrs_and_pins_its_ak(swtpm: str, tmp_path: Path) -> None:
    nonce = hashlib.sha512(tmp_path.name.encode()).digest()
    evidence = make_provider("tpm", tmp_path, tcti=swtpm).make(nonce)
    (tmp_path / "vm.json").write_text(json.dumps(evidence.to_json()))
    policy = policy_cmd(tmp_path, "--tpm-evidence", str(tmp_path / "vm.json"))
    (tpm,) = sets(policy)
    assert sorted(map(int, tpm["pcrs"])) == list(range(8))  # type: ignore[call-overload]
    assert len(policy.tpm_ak_names) == 1
    # the policy accepts that VM's next quote (same PCRs, same AK) for a fresh nonce
    fresh = hashlib.sha512(nonce).digest()
    again = make_provider("tpm", tmp_path, tcti=swtpm).make(fresh)
    verify_evidence(again, fresh, policy, 0.0)


def test_tampered_tpm_evidence_is_refused(
    swtpm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evidence = make_provider("tpm", tmp_path, tcti=swtpm).make(bytes(64)).to_json()
    evidence["data"]["pcrs"]["7"] = "ff" * 32  # claim another Secure Boot state
    (tmp_path / "vm.json").write_text(json.dumps(evidence))
    assert main(["policy", "--tpm-evidence", str(tmp_path / "vm.json")]) != 0
    assert "pcr" in capsys.readouterr().err.lower()


def test_no_source_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy"]) == 2
    assert "no measurements given" in capsys.readouterr().err


def test_base_policy_is_kept_and_extended(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        "max_evidence_age_s: 60\nmeasurements:\n  - {tee: sim}\nallow_simulated: true\n"
    )
    policy = policy_cmd(tmp_path, "--base", str(base), "--tdx-quote", str(DATA / "tdx_quote"))
    assert policy.max_evidence_age_s == 60 and policy.allow_simulated
    assert [m.tee for m in policy.measurements] == ["sim", "tdx"]
