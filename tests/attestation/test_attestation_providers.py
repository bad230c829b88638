"""The hardware providers (configfs-tsm for TDX / SEV-SNP, Gramine's /dev/attestation for SGX).

No TEE hardware runs here, so these tests use test doubles: a temporary directory
that imitates each kernel / Gramine file ABI and answers with a genuine Intel quote
from tests/data/attestation. What is real: the provider's file protocol, and the
evidence it produces verified by dcap-qvl against genuine collateral.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from attestation_data import (
    SGX_MRENCLAVE,
    SGX_REPORT_DATA,
    SGX_TIME,
    TDX_MRTD,
    TDX_SET,
    TDX_TIME,
    fixed,
    quote_bytes,
)

from trustserve.attestation import Policy, make_provider, verify_evidence
from trustserve.errors import ConfigError

TDX_REPORT_DATA = quote_bytes("tdx_quote")[568:632]  # report data field of the TD report


class FakeConfigfsTsm:
    """Imitates /sys/kernel/config/tsm/report: answers each entry's inblob with a quote.

    The kernel fills ``outblob`` when it is read; this double polls for a written
    ``inblob`` and then writes ``provider``, ``generation`` and ``outblob``.
    """

    def __init__(self, root: Path, provider: str, quote: bytes, auxblob: bytes = b"") -> None:
        self.root, self.provider, self.quote, self.auxblob = root, provider, quote, auxblob
        self.inblobs: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeConfigfsTsm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        answered: set[Path] = set()
        while not self._stop.wait(0.005):
            for entry in self.root.iterdir():
                inblob = entry / "inblob"
                if entry in answered or not inblob.exists() or inblob.stat().st_size != 64:
                    continue
                self.inblobs.append(inblob.read_bytes())
                (entry / "provider").write_text(self.provider + "\n")
                (entry / "generation").write_text("1\n")
                if self.auxblob:
                    (entry / "auxblob").write_bytes(self.auxblob)
                (entry / ".outblob").write_bytes(self.quote)
                (entry / ".outblob").rename(entry / "outblob")
                answered.add(entry)


@pytest.fixture
def tsm_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    yield root


def test_tdx_evidence_from_configfs_tsm_verifies(tsm_root: Path, tmp_path: Path) -> None:
    with FakeConfigfsTsm(tsm_root, "tdx_guest", quote_bytes("tdx_quote")) as fake:
        evidence = make_provider("tdx", tmp_path, root=tsm_root).make(TDX_REPORT_DATA)
    assert fake.inblobs == [TDX_REPORT_DATA]
    assert evidence.kind == "tdx"
    assert evidence.data["provider"] == "tdx_guest"
    policy = Policy.from_yaml(f"measurements: [{TDX_SET}]")
    claims = verify_evidence(
        evidence, TDX_REPORT_DATA, policy, TDX_TIME, sources=fixed("tdx_quote")
    )
    assert claims.measurements["mrtd"] == TDX_MRTD


def test_configfs_tsm_of_another_tee_is_a_configuration_error(
    tsm_root: Path, tmp_path: Path
) -> None:
    with (
        FakeConfigfsTsm(tsm_root, "sev_guest", b"an SEV-SNP report"),
        pytest.raises(ConfigError, match="sev_guest"),
    ):
        make_provider("tdx", tmp_path, root=tsm_root).make(bytes(64))


def test_missing_configfs_tsm_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configfs-tsm"):
        make_provider("tdx", tmp_path, root=tmp_path / "absent").make(bytes(64))


def gramine_dir(tmp_path: Path, attestation_type: str) -> Path:
    """Imitates Gramine's /dev/attestation with a genuine SGX quote in ``quote``."""
    device = tmp_path / "dev-attestation"
    device.mkdir()
    (device / "attestation_type").write_text(attestation_type)
    (device / "quote").write_bytes(quote_bytes("sgx_quote"))
    return device


def test_sgx_evidence_from_gramine_verifies(tmp_path: Path) -> None:
    device = gramine_dir(tmp_path, "dcap")
    evidence = make_provider("sgx", tmp_path, attestation_dir=device).make(SGX_REPORT_DATA)
    assert (device / "user_report_data").read_bytes() == SGX_REPORT_DATA.ljust(64, b"\0")
    policy = Policy.from_yaml(
        f'measurements: [{{tee: sgx, mrenclave: "{SGX_MRENCLAVE}"}}]\n'
        "accepted_tcb_statuses: [ConfigurationAndSWHardeningNeeded]\n"
        "accepted_advisories: [INTEL-SA-00289, INTEL-SA-00615]\n"
    )
    claims = verify_evidence(
        evidence, SGX_REPORT_DATA, policy, SGX_TIME, sources=fixed("sgx_quote")
    )
    assert claims.tee == "sgx"


def test_gramine_with_epid_attestation_is_a_configuration_error(tmp_path: Path) -> None:
    device = gramine_dir(tmp_path, "epid")
    with pytest.raises(ConfigError, match="dcap"):
        make_provider("sgx", tmp_path, attestation_dir=device).make(SGX_REPORT_DATA)


def test_unknown_provider_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sim, tpm"):
        make_provider("nitro", tmp_path)
