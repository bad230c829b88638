"""AMD SEV-SNP reports: the verifier, the AMD certificate chain (ARK/ASK in ``amd/``) and VCEKs."""
