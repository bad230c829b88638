"""Evidence verifiers: the code that runs where evidence is judged (the KMS, a client),
one family per subpackage (``dcap`` for SGX/TDX, ``snp``, ``tpm``) and ``sim``. Chosen
by evidence kind through ``attestation.registry.make_verifier``; nothing here imports a
provider, so a verifier cannot be satisfied by what this machine would produce."""
