"""The attestation flags several commands share, each declared once.

Each is a ``trustserve.options.Flag`` (spelling, help, argparse settings) that the
commands add with ``add_to``. Here live the options of every command that verifies evidence (the
worker checking a hardware KMS, ``kms serve``, ``predict`` / ``batch``, ``verify``):
where DCAP collateral and SEV-SNP VCEKs come from; and the evidence provider's flag.

The provider flag is ``--provider`` everywhere (``kms serve``, ``attest``, ``worker``,
``up``, ``serve``); ``--attestation``, its old spelling on the worker and the stack,
still works and warns.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from trustserve.attestation.registry import PROVIDERS, VerifierSources
from trustserve.options import Flag

PROVIDER = Flag(
    "--provider",
    "evidence provider: what proves this process runs in a TEE (sim is for development: "
    "the verifier must opt in)",
    {"choices": sorted(PROVIDERS)},
)
# the worker's and the stack's: ``--attestation`` was their spelling before ``--provider``
WORKER_PROVIDER = replace(PROVIDER, deprecated=("--attestation",))

# where verifiers fetch what the evidence does not carry, by argparse destination
VERIFIER = {
    "collateral_dir": Flag(
        "--collateral-dir",
        "sgx/tdx evidence: DCAP collateral files <tee>-<fmspc>-<ca>.json",
        {"type": Path},
    ),
    "pccs_url": Flag("--pccs-url", "sgx/tdx evidence: fetch DCAP collateral from this PCCS"),
    "vcek_dir": Flag("--vcek-dir", "sev-snp evidence: a directory of cached VCEKs", {"type": Path}),
    "kds_url": Flag("--kds-url", "sev-snp evidence: fetch VCEKs from this AMD KDS (or proxy)"),
}


def add_verifier_arguments(
    parser: argparse.ArgumentParser, only: Iterable[str] | None = None
) -> None:
    """``--collateral-dir``, ``--pccs-url``, ``--vcek-dir``, ``--kds-url`` (or ``only``)."""
    for dest, flag in VERIFIER.items():
        if only is None or dest in only:
            flag.add_to(parser, dest)


def verifier_sources(args: Any, **more: Any) -> VerifierSources:
    """The ``VerifierSources`` those flags name (``args``: a namespace or options object)."""
    given = {dest: getattr(args, dest, None) for dest in VERIFIER}
    return VerifierSources.configured(**given, **more)
