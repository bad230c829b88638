"""TPM 2.0 quotes: the verifier and which attestation keys it trusts."""
