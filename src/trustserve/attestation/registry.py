"""The one place that picks a provider by name and a verifier by evidence kind."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustserve.attestation.base import Claims, Evidence, EvidenceProvider, Verifier
from trustserve.attestation.checks import check_report_data
from trustserve.attestation.policy import Policy
from trustserve.errors import AttestationRefused, ConfigError

if TYPE_CHECKING:
    from trustserve.attestation.verifiers.dcap.collateral import CollateralSource
    from trustserve.attestation.verifiers.snp.verifier import SnpOptions

# provider name -> "module:factory"; the factory takes (home, **options).
PROVIDERS = {
    "sim": "trustserve.attestation.providers.sim:SimProvider",
    "tpm": "trustserve.attestation.providers.tpm:provider",
    "tdx": "trustserve.attestation.providers.tsm:tdx_provider",
    "sev-snp": "trustserve.attestation.providers.tsm:sev_snp_provider",
    "sgx": "trustserve.attestation.providers.gramine:provider",
}

# Providers whose frontend and workers on one host are processes in one protected memory
# domain (a confidential VM's encrypted guest memory; the simulated platform stands in for
# one; a plain TPM host trusts its kernel with all memory anyway). Not sgx: each Gramine
# enclave is its own domain and memory they share is the host's. docs/security.md
# ("Local jobs and the broker key").
ONE_MEMORY_DOMAIN = frozenset({"sim", "tpm", "tdx", "sev-snp"})


def clear_local_jobs(provider: str) -> bool:
    """Whether jobs between a frontend and its workers on one host (the embedded broker) go
    in clear: only where they never leave one protected memory domain. Any provider not
    known to be such (sgx, a future one): False, the broker key stays on."""
    return provider in ONE_MEMORY_DOMAIN


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_provider(name: str, home: Path, **options: Any) -> EvidenceProvider:
    """The evidence provider called ``name`` (sim, tpm, tdx, sev-snp, sgx).

    Options: tpm ``tcti`` (e.g. ``"swtpm:host=127.0.0.1,port=2321"``), ``pcrs``
    (list of PCR indices), ``bank``, ``ak_handle``, ``ak_template_nv``,
    ``ak_cert_nv``, ``ak_cert_intermediates`` (see ``attestation.providers.tpm``); tdx/sev-snp
    ``root`` (the configfs-tsm report dir, default /sys/kernel/config/tsm/report);
    sgx ``attestation_dir`` (default /dev/attestation). Values may be strings, as
    ``parse_options`` makes them from ``--attestation-option KEY=VALUE`` flags.
    """
    if name not in PROVIDERS:
        raise ConfigError(f"unknown attestation provider {name!r}; one of {', '.join(PROVIDERS)}")
    factory = _load(PROVIDERS[name])
    if name == "sim":
        options = {}
    try:
        provider: EvidenceProvider = factory(home, **options)
    except TypeError as exc:
        raise ConfigError(f"attestation provider {name}: unusable options: {exc}") from None
    return provider


def parse_options(pairs: Sequence[str] | None) -> dict[str, str]:
    """``["tcti=device:/dev/tpmrm0", "pcrs=0,7"]`` -> options for ``make_provider``."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"attestation option {pair!r} is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = value
    return options


@dataclass(frozen=True)
class VerifierSources:
    """What verifiers fetch from the verifier's own side, never from the evidence.

    ``collateral``: DCAP collateral for sgx/tdx quotes (a collateral directory
    and/or a PCCS; ``trustserve.attestation.verifiers.dcap.collateral.collateral_source``).
    Without it, sgx/tdx evidence is refused (claim ``collateral``).

    ``snp``: where sev-snp VCEKs come from when the evidence holds none (a cache
    directory, an AMD KDS URL) and which AMD product lines are accepted
    (``attestation.verifiers.snp.verifier.SnpOptions``; None: all products, no VCEK
    source).
    """

    collateral: CollateralSource | None = None
    snp: SnpOptions | None = None

    @classmethod
    def configured(
        cls,
        *,
        collateral_dir: Path | None = None,
        pccs_url: str | None = None,
        vcek_dir: Path | None = None,
        kds_url: str | None = None,
        snp_products: Sequence[str] | None = None,
    ) -> VerifierSources:
        """From the ``--collateral-dir`` / ``--pccs-url`` / ``--vcek-dir`` / ``--kds-url`` /
        ``--snp-product`` options (any of them, or none); ConfigError for one that cannot work.
        """
        from trustserve.attestation.verifiers.dcap.collateral import collateral_source
        from trustserve.attestation.verifiers.snp.verifier import SnpOptions

        return cls(
            collateral=collateral_source(collateral_dir, pccs_url),
            snp=SnpOptions.configured(vcek_dir=vcek_dir, kds_url=kds_url, products=snp_products),
        )


NO_SOURCES = VerifierSources()


def make_verifier(kind: str, policy: Policy, sources: VerifierSources = NO_SOURCES) -> Verifier:
    """The verifier for evidence of ``kind``, configured from ``policy`` where it needs trust roots.

    ``sources``: where sgx/tdx collateral and sev-snp VCEKs come from, and which AMD
    product lines are accepted (the evidence's own collateral is never used).
    """
    if kind == "sim":
        from trustserve.attestation.verifiers.sim import SimVerifier

        return SimVerifier(policy.sim_platform_keys)
    if kind == "tpm":
        from trustserve.attestation.verifiers.tpm.verifier import TpmVerifier

        return TpmVerifier(policy.tpm_ak_names, policy.tpm_ak_ca_certs)
    if kind in ("sgx", "tdx"):
        from trustserve.attestation.verifiers.dcap.verifier import DcapVerifier

        return DcapVerifier(sources.collateral)
    if kind == "sev-snp":
        from trustserve.attestation.verifiers.snp.verifier import SnpVerifier

        return SnpVerifier(sources.snp)
    raise AttestationRefused("tee", f"no verifier for {kind!r} evidence")


def verify_evidence(
    evidence: Evidence,
    expected_report_data: bytes | None,
    policy: Policy,
    now: float,
    sources: VerifierSources = NO_SOURCES,
) -> Claims:
    """Verify ``evidence`` and apply ``policy``; return the claims if both accept it.

    Raises AttestationRefused (naming the claim) or BadRequest (malformed evidence).
    """
    if not math.isfinite(now):
        raise ConfigError("the verification time must be a finite number")
    if evidence.kind == "sim" and not policy.allow_simulated:
        raise AttestationRefused(
            "tee", "simulated evidence (not hardware-protected); policy lacks allow_simulated"
        )
    verifier = make_verifier(evidence.kind, policy, sources)
    claims = verifier.verify(evidence, expected_report_data, now)
    check_report_data(claims.report_data, expected_report_data)
    policy.check(claims, now)
    return claims
