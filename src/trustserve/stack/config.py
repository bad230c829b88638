"""Settings of a trustserve deployment, with the secure defaults in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trustserve.files import default_home
from trustserve.worker.options import WorkerOptions


@dataclass
class Settings:
    home: Path = field(default_factory=default_home)
    model_store: Path | None = None
    host: str = "127.0.0.1"
    inference_port: int = 8080
    management_host: str = "127.0.0.1"
    management_port: int = 8081
    metrics_port: int = 8082
    tls: bool = True
    tls_cert: Path | None = None  # a real server certificate; None: the local CA's
    tls_key: Path | None = None
    broker_url: str | None = None
    # Process parallelism beats intra-op threads on a busy host: one single-threaded
    # worker per core served 15-18% more than one worker with a thread per core
    # (docs/benchmarks.md); no barrier waits on a thread the frontend preempted.
    workers_per_model: int = field(default_factory=lambda: os.cpu_count() or 1)
    # What every local worker starts with (engine, threads, KMS and its CA, attestation,
    # replay window); the stack fills in the broker, the KMS URL and each archive.
    worker: WorkerOptions = field(default_factory=WorkerOptions)
    max_queue: int = 1024
    max_deliveries: int = 3
    request_timeout_s: float = 30.0
    max_body_bytes: int = 64 * 1024 * 1024
    dev: bool = False
    # models /v2/health/ready waits for; empty: any one model with a live worker
    readiness_require: tuple[str, ...] = ()
    kms_port: int = 8083
    grpc_port: int = 8084  # Open Inference Protocol v2 over gRPC on ``host``; 0: none

    @property
    def kms_url(self) -> str | None:
        return self.worker.kms

    @property
    def attestation(self) -> str:
        return self.worker.attestation

    @property
    def attestation_options(self) -> dict[str, str]:
        """``make_provider`` options for ``attestation`` (``--attestation-option``)."""
        from trustserve.attestation.registry import parse_options

        return parse_options(self.worker.attestation_options)

    @property
    def store(self) -> Path:
        return self.model_store or self.home / "models"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def kms_ca(self) -> Path:
        """The CA that authenticates the KMS's TLS certificate."""
        return self.worker.kms_ca or self.tls_dir / "ca.pem"

    @property
    def token_file(self) -> Path:
        return self.home / "management.token"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"
