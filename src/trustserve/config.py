"""Settings of a trustserve deployment, with the secure defaults in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_home() -> Path:
    return Path(os.environ.get("TRUSTSERVE_HOME") or Path.home() / ".trustserve")


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
    broker_url: str | None = None
    # Process parallelism beats intra-op threads on a busy host: one single-threaded
    # worker per core served 15-18% more than one worker with a thread per core
    # (docs/benchmarks.md); no barrier waits on a thread the frontend preempted.
    workers_per_model: int = field(default_factory=lambda: os.cpu_count() or 1)
    engine: str = "onnxruntime"
    engine_threads: int = 1
    max_queue: int = 1024
    max_deliveries: int = 3
    request_timeout_s: float = 30.0
    max_body_bytes: int = 64 * 1024 * 1024
    dev: bool = False
    kms_url: str | None = None
    kms_port: int = 8083
    kms_identity: str | None = None  # trusted KMS identity (key file or base64), with kms_url
    kms_policy: str | None = None  # or: verify the KMS bundle under this policy file
    key_refresh_s: float = 60.0  # workers refresh their serving keys this often
    attestation: str = "sim"

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
    def token_file(self) -> Path:
        return self.home / "management.token"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"
