"""Remote attestation: evidence providers, verifiers and the release policy.

See docs/attestation.md. The public API::

    make_provider(name, home, **options) -> EvidenceProvider
    verify_evidence(evidence, expected_report_data, policy, now, sources=NO_SOURCES) -> Claims
    VerifierSources.configured(collateral_dir=..., pccs_url=..., vcek_dir=..., kds_url=...)
    Policy.from_yaml / load / default / development / from_json, policy.check / to_json
"""

from trustserve.attestation.base import Claims, Evidence, EvidenceProvider, Verifier
from trustserve.attestation.policy import MeasurementSet, Policy
from trustserve.attestation.registry import (
    VerifierSources,
    make_provider,
    make_verifier,
    verify_evidence,
)

__all__ = [
    "Claims",
    "Evidence",
    "EvidenceProvider",
    "MeasurementSet",
    "Policy",
    "Verifier",
    "VerifierSources",
    "make_provider",
    "make_verifier",
    "verify_evidence",
]
