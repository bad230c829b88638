"""Attack: the host answers for a PCCS configured over plain HTTP.

A verifier (the KMS, a client, ``trustserve verify``) asks its PCCS for the DCAP
collateral a quote is judged by. Every piece is signed by Intel, but several genuine
sets are valid at once: an older TCB info (before a TCB recovery made the platform
``OutOfDate``) or a PCK CRL from before a revocation stay valid until their
``nextUpdate``, about a month. Over ``http://`` whoever is on the path (the host of a
KMS in a TEE, any router) can answer with the set it prefers, so ``--pccs-url
http://…`` was accepted and a revoked or out-of-date platform passed for up to a
month more. Now an ``http://`` PCCS URL stops the verifier at start (ConfigError,
exit 2 from the CLIs), unless ``TRUSTSERVE_INSECURE_PCCS_HTTP=1`` says it is a test
PCCS, and then every use warns loudly.

Real parts: the verifier sources and ``trustserve kms serve`` as a user starts them.
No PCCS is contacted (refused at configuration).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trustserve.attestation import VerifierSources
from trustserve.attestation.verifiers.dcap.collateral import INSECURE_HTTP_ENV, Pccs
from trustserve.errors import ConfigError

URL = "http://pccs.example:8081/sgx/certification/v4/"


def test_a_plain_http_pccs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSECURE_HTTP_ENV, raising=False)
    with pytest.raises(ConfigError, match="https://") as info:
        VerifierSources.configured(pccs_url=URL)
    assert INSECURE_HTTP_ENV in str(info.value)


def test_kms_serve_refuses_to_start_with_a_plain_http_pccs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustserve.cli import main

    monkeypatch.delenv(INSECURE_HTTP_ENV, raising=False)
    assert main(["kms", "serve", "--home", str(tmp_path), "--pccs-url", URL]) == 2
    assert "plain HTTP" in capsys.readouterr().err


def test_the_explicit_opt_in_is_loud(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(INSECURE_HTTP_ENV, "1")
    with caplog.at_level(logging.WARNING):
        assert isinstance(VerifierSources.configured(pccs_url=URL).collateral, Pccs)
    assert any("INSECURE" in r.getMessage() and URL in r.getMessage() for r in caplog.records)


def test_https_needs_no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSECURE_HTTP_ENV, raising=False)
    sources = VerifierSources.configured(pccs_url=URL.replace("http://", "https://"))
    assert isinstance(sources.collateral, Pccs)
