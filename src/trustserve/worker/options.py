"""Everything a worker process is started with, defined once.

``WorkerOptions`` is parsed from a command line (``trustserve worker``, the
worker module), built from the stack's settings (``up`` / ``serve``) and turned
back into a command line for each child process (``to_argv``). Every option is
one dataclass field whose metadata carries its flag and help text, so adding an
option here is the only change needed for all three paths.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from trustserve.attestation.registry import PROVIDERS, VerifierSources
from trustserve.engines import ENGINES
from trustserve.files import HOME_HELP
from trustserve.keyrelease.trust import KmsTrust


def _opt(flag: str, help: str, **argparse_kwargs: Any) -> dict[str, Any]:
    return {"flag": flag, "help": help, "argparse": argparse_kwargs}


@dataclass(frozen=True)
class WorkerOptions:
    archive: Path | None = field(
        default=None, metadata=_opt("--archive", "model archive (.tsm) to serve", type=Path)
    )
    broker: str | None = field(
        default=None,
        metadata=_opt("--broker", "unix:PATH (embedded) or rediss://HOST:PORT/?..."),
    )
    engine: str = field(
        default="onnxruntime", metadata=_opt("--engine", "inference engine", choices=ENGINES)
    )
    threads: int = field(
        default=1, metadata=_opt("--threads", "engine threads per worker (default 1)", type=int)
    )
    home: Path | None = field(
        default=None,
        metadata=_opt("--home", HOME_HELP, type=Path),
    )
    kms: str | None = field(
        default=None, metadata=_opt("--kms", "key service URL: keys are released there")
    )
    kms_ca: Path | None = field(
        default=None,
        metadata=_opt(
            "--kms-ca",
            "CA certificate that authenticates the KMS's TLS (default HOME/tls/ca.pem)",
            type=Path,
        ),
    )
    kms_identity: str | None = field(
        default=None,
        metadata=_opt(
            "--kms-identity",
            "with --kms: the KMS identity to trust (Ed25519 public key file or base64)",
        ),
    )
    kms_policy: Path | None = field(
        default=None,
        metadata=_opt(
            "--kms-policy",
            "with --kms: or trust the KMS whose bundle this policy admits",
            type=Path,
        ),
    )
    collateral_dir: Path | None = field(
        default=None,
        metadata=_opt(
            "--collateral-dir",
            "with --kms-policy and a TDX/SGX KMS: DCAP collateral files to check its quote with",
            type=Path,
        ),
    )
    pccs_url: str | None = field(
        default=None,
        metadata=_opt("--pccs-url", "with --kms-policy and a TDX/SGX KMS: a PCCS for collateral"),
    )
    vcek_dir: Path | None = field(
        default=None,
        metadata=_opt(
            "--vcek-dir", "with --kms-policy and an SEV-SNP KMS: cached VCEKs", type=Path
        ),
    )
    kds_url: str | None = field(
        default=None,
        metadata=_opt("--kds-url", "with --kms-policy and an SEV-SNP KMS: an AMD KDS for VCEKs"),
    )
    key_refresh: float = field(
        default=60.0,
        metadata=_opt("--key-refresh", "serving-key refresh interval in seconds", type=float),
    )
    attestation: str = field(
        default="sim",
        metadata=_opt(
            "--attestation",
            "evidence provider (sim is for development: the KMS must opt in)",
            choices=sorted(PROVIDERS),
        ),
    )
    attestation_options: tuple[str, ...] | None = field(
        default=None,
        metadata=_opt(
            "--attestation-option",
            "provider option KEY=VALUE, repeatable (tpm: tcti=T, pcrs=0,7, "
            "ak_handle=0x81000003, ak_cert_nv=0x01C101D0)",
            action="append",
            metavar="KEY=VALUE",
        ),
    )
    kms_wait: float = field(
        default=0.0,
        metadata=_opt(
            "--kms-wait",
            "seconds to wait for a KMS that does not answer yet before giving up (default 0; "
            "the stack starts its workers alongside its embedded KMS and sets it)",
            type=float,
        ),
    )
    replay_window: float = field(
        default=300.0,
        metadata=_opt("--replay-window", "sealed-request freshness in seconds", type=float),
    )

    @classmethod
    def add_arguments(
        cls,
        parser: argparse.ArgumentParser,
        only: Iterable[str] | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        """Add the flags of ``only`` these fields (default: all) to ``parser``; with
        ``defaults=False`` a flag not given stays None (a configuration file may set it)."""
        wanted = None if only is None else set(only)
        for f in fields(cls):
            if wanted is not None and f.name not in wanted:
                continue
            meta = f.metadata
            default = f.default if defaults else None
            parser.add_argument(
                meta["flag"], dest=f.name, default=default, help=meta["help"], **meta["argparse"]
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> WorkerOptions:
        """The options in ``args`` (fields it lacks or has as None keep their default), then
        ``overrides``."""
        values = {
            f.name: getattr(args, f.name)
            for f in fields(cls)
            if getattr(args, f.name, None) is not None
        }
        if values.get("attestation_options") is not None:
            values["attestation_options"] = tuple(values["attestation_options"])
        return cls(**{**values, **overrides})

    def kms_trust(self) -> KmsTrust | None:
        """Which KMS this worker believes (``--kms-identity`` / ``--kms-policy``), with the
        verifier-side sources for a hardware KMS's evidence."""
        sources = VerifierSources.configured(
            collateral_dir=self.collateral_dir,
            pccs_url=self.pccs_url,
            vcek_dir=self.vcek_dir,
            kds_url=self.kds_url,
        )
        return KmsTrust.from_options(self.kms_identity, self.kms_policy, sources)

    def to_argv(self) -> list[str]:
        """The command line that ``from_args`` reads back as these options (defaults left out)."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.default is not MISSING and value == f.default):
                continue
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                argv += [f.metadata["flag"], str(item)]
        return argv


def parser(prog: str = "trustserve-worker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    WorkerOptions.add_arguments(p)
    return p
