"""The release policy: which evidence a KMS (or a client judging a KMS) accepts, the
measurement sets of each TEE, and reference values derived from build outputs."""

from trustserve.attestation.policy.release import MeasurementSet, Policy

__all__ = ["MeasurementSet", "Policy"]
