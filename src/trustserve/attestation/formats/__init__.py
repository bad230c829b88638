"""Evidence layouts both sides read: the SEV-SNP report and certificate table, the SGX
SIGSTRUCT. Parsing only; no trust decision is made here."""
