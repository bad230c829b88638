"""Everything a worker process is started with, defined once.

``WorkerOptions`` is parsed from a command line (``trustserve worker``, the
worker module), built from the stack's settings (``up`` / ``serve``) and turned
back into a command line for each child process (``to_argv``). Every option is
one dataclass field (``trustserve.options.option``) that declares its flag, help,
default and, for those a stack sets too, its ``trustserve.yaml`` key and environment
variable; adding an option here is the only change needed for every path.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from trustserve.attestation.flags import VERIFIER, WORKER_PROVIDER, verifier_sources
from trustserve.engines import ENGINES
from trustserve.keyrelease.trust import KmsTrust
from trustserve.options import Flag, integer, number, option, options_of, pairs, path, text


def _embedded_in_dev(value: Any, stack: Any) -> Any:
    """How ``config show`` prints a KMS setting the stack's embedded KMS fills in."""
    return value or ("(embedded)" if getattr(stack, "dev", False) else "(none)")


def _none(value: Any, _stack: Any) -> Any:
    return value or "(none)"


@dataclass(frozen=True)
class WorkerOptions:
    archive: Path | None = option(
        None, flag=Flag("--archive", "model archive (.tsm) to serve", {"type": Path})
    )
    broker: str | None = option(
        None,
        flag=Flag(
            "--broker",
            "unix:PATH (embedded), rediss://HOST:PORT/?... or rediss+sentinel://HOSTS/SERVICE?...; "
            "Redis shards separated by spaces, in the frontends' order",
        ),
    )
    engine: str = option(
        "onnxruntime",
        flag=Flag("--engine", "inference engine", {"choices": ENGINES}),
        key="worker.engine",
        parse=text,
    )
    threads: int = option(
        1,
        flag=Flag("--threads", "engine threads per worker", {"type": int}),
        key="worker.threads",
        parse=integer,
    )
    lone_threads: int | None = option(
        None,
        flag=Flag(
            "--lone-threads",
            "engine threads for a small batch while no other worker on this host is busy "
            "(a second engine session per worker; 0: off)",
            {"type": int},
        ),
        key="worker.lone_threads",
        parse=integer,
        default_text="the host's cores",
        show=lambda value, _stack: (
            f"{len(os.sched_getaffinity(0))} (the host's cores)" if value is None else value
        ),
    )
    home: Path | None = option(
        None,
        flag=Flag("--home", "state directory", {"type": Path}),
        key="home",
        parse=path,
        default_text="$TRUSTSERVE_HOME, else ~/.trustserve",
    )
    kms: str | None = option(
        None,
        flag=Flag(
            "--kms",
            "key service URL (several replicas: URL,URL,...): keys are released there",
        ),
        key="kms.url",
        parse=text,
        show=_embedded_in_dev,
    )
    kms_ca: Path | None = option(
        None,
        flag=Flag("--kms-ca", "CA certificate that authenticates the KMS's TLS", {"type": Path}),
        key="kms.ca",
        parse=path,
        default_text="HOME/tls/ca.pem",
        show=lambda value, stack: getattr(stack, "kms_ca", value),
    )
    kms_identity: str | None = option(
        None,
        flag=Flag(
            "--kms-identity",
            "with --kms: the KMS identity to trust (Ed25519 public key file or base64)",
        ),
        key="kms.identity",
        parse=text,
        show=_embedded_in_dev,
    )
    kms_policy: Path | None = option(
        None,
        flag=Flag(
            "--kms-policy",
            "with --kms: or trust the KMS whose bundle this policy admits",
            {"type": Path},
        ),
        key="kms.policy",
        parse=path,
        show=_none,
    )
    collateral_dir: Path | None = option(None, flag=VERIFIER["collateral_dir"])
    pccs_url: str | None = option(None, flag=VERIFIER["pccs_url"])
    vcek_dir: Path | None = option(None, flag=VERIFIER["vcek_dir"])
    kds_url: str | None = option(None, flag=VERIFIER["kds_url"])
    key_refresh: float = option(
        60.0,
        flag=Flag("--key-refresh", "serving-key refresh interval in seconds", {"type": float}),
        key="worker.key_refresh",
        parse=number,
    )
    attestation: str = option("sim", flag=WORKER_PROVIDER, key="attestation.provider", parse=text)
    attestation_options: tuple[str, ...] | None = option(
        None,
        flag=Flag(
            "--attestation-option",
            "provider option KEY=VALUE, repeatable (tpm: tcti=T, pcrs=0,7, "
            "ak_handle=0x81000003, ak_cert_nv=0x01C101D0)",
            {"action": "append", "metavar": "KEY=VALUE"},
        ),
        key="attestation.options",
        parse=pairs,
        show=lambda value, _stack: ",".join(value or ()) or "(none)",
    )
    kms_wait: float = option(
        0.0,
        flag=Flag(
            "--kms-wait",
            "seconds to wait for a KMS that does not answer yet before giving up (the stack "
            "starts its workers alongside its embedded KMS and sets it)",
            {"type": float},
        ),
    )
    broker_spread: int = option(
        1,
        flag=Flag(
            "--broker-spread",
            "join the least-manned of the queue's first N Redis shards (N > 1: a model "
            "hotter than one Redis primary, docs/redis.md)",
            {"type": int},
        ),
        key="broker.spread",
        parse=integer,
    )
    replay_window: float = option(
        300.0,
        flag=Flag("--replay-window", "sealed-request freshness in seconds", {"type": float}),
        key="worker.replay_window",
        parse=number,
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
        for opt in options_of(cls, only):
            opt.add_to(parser, defaults=defaults)

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
        sources = verifier_sources(self)
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
                argv += [f.metadata["option"].flag.flag, str(item)]
        return argv


def parser(prog: str = "trustserve-worker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    WorkerOptions.add_arguments(p)
    return p
