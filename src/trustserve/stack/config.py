"""Settings of a trustserve deployment, with the secure defaults in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trustserve import home as layout
from trustserve.home import default_home
from trustserve.options import (
    Flag,
    Show,
    boolean,
    counts,
    integer,
    names,
    number,
    option,
    path,
    text,
)
from trustserve.worker.options import WorkerOptions


def _or(text: str) -> Show:
    return lambda value, _settings: value or text


@dataclass
class Settings:
    """A deployment's settings. The fields with a ``key`` are the stack's options: with the
    worker's (``WorkerOptions``) they make ``trustserve.yaml``, ``TRUSTSERVE_*``, the flags
    of ``up`` / ``serve`` and ``config show`` (``stack.options``)."""

    home: Path = field(default_factory=default_home)
    model_store: Path | None = option(
        None,
        flag=Flag("--model-store", "model archives", {"type": Path}),
        key="model_store",
        parse=path,
        default_text="HOME/models",
        show=lambda _value, s: s.store,
    )
    host: str = option(
        "127.0.0.1", flag=Flag("--host", "inference address"), key="listen.host", parse=text
    )
    inference_port: int = option(
        8080,
        flag=Flag("--port", "inference port", {"type": int}),
        key="listen.port",
        parse=integer,
        dest="port",
    )
    management_host: str = option(
        "127.0.0.1",
        key="listen.management_host",
        parse=text,
        help="management and metrics address (keep it private)",
    )
    management_port: int = option(
        8081,
        flag=Flag(
            "--management-port", "management API port, on the management host", {"type": int}
        ),
        key="listen.management_port",
        parse=integer,
    )
    metrics_port: int = option(
        8082,
        flag=Flag(
            "--metrics-port", "Prometheus /metrics port, on the management host", {"type": int}
        ),
        key="listen.metrics_port",
        parse=integer,
    )
    grpc_port: int = option(  # Open Inference Protocol v2 over gRPC on ``host``; 0: none
        8084,
        flag=Flag("--grpc-port", "gRPC inference port on --host (0: no gRPC)", {"type": int}),
        key="listen.grpc_port",
        parse=integer,
        show=lambda value, _settings: value or "(off)",
    )
    # who a request came from is the TCP peer; a forwarded header (X-Forwarded-For,
    # Forwarded) is believed only from these (a client on loopback could forge it else)
    trusted_proxies: tuple[str, ...] = option(
        (),
        flag=Flag(
            "--trusted-proxy",
            "a reverse proxy whose X-Forwarded-For names the client, repeatable",
            {"action": "append", "metavar": "CIDR"},
        ),
        key="listen.trusted_proxies",
        parse=names,
        dest="trusted_proxy",
        show=lambda value, _settings: ",".join(value) or "(none: the TCP peer)",
    )
    access_log: Path | None = option(
        None,
        flag=Flag(
            "--access-log",
            "a line per inference and management request (peer, method, path, status; "
            "never bodies or query strings) appended to FILE, - for standard error",
            {"type": Path, "metavar": "FILE"},
        ),
        key="log.access",
        parse=path,
        default_text="off",
        show=_or("(off)"),
    )
    insecure_http: bool = option(
        False,
        flag=Flag("--insecure-http", "plain HTTP (NOT secure)", {"action": "store_true"}),
        key="tls.insecure_http",
        parse=boolean,
    )
    tls_cert: Path | None = option(  # a real server certificate; None: the local CA's
        None,
        flag=Flag("--tls-cert", "server certificate", {"type": Path}),
        key="tls.cert",
        parse=path,
        default_text="the local CA's, HOME/tls/server.pem",
        show=lambda value, s: value or s.tls_dir / "server.pem",
    )
    tls_key: Path | None = option(
        None,
        flag=Flag("--tls-key", "its private key", {"type": Path}),
        key="tls.key",
        parse=path,
        default_text="HOME/tls/server-key.pem",
        show=lambda value, s: value or s.tls_dir / "server-key.pem",
    )
    broker_url: str | None = option(
        None,
        flag=Flag(
            "--broker",
            "rediss://HOST:PORT/?... (or rediss+sentinel://HOSTS/SERVICE?...) to scale out; "
            "several, separated by spaces, shard the models over them (same order everywhere)",
        ),
        key="broker.url",
        parse=text,
        dest="broker",
        default_text="embedded",
        show=_or("(embedded)"),
    )
    # Process parallelism beats intra-op threads on a busy host: one single-threaded
    # worker per core served 15-18% more than one worker with a thread per core
    # (docs/benchmarks.md); no barrier waits on a thread the frontend preempted.
    workers_per_model: int = option(
        factory=lambda: os.cpu_count() or 1,
        flag=Flag("--workers", "local worker processes per model", {"type": int}),
        key="worker.per_model",
        parse=integer,
        dest="workers",
        default_text="one per core",
    )
    workers_by_model: tuple[str, ...] = option(
        (),
        key="worker.models",
        parse=counts,
        help="worker processes of these models (name or name:version: N), instead of "
        "worker.per_model",
        show=lambda value, _settings: ",".join(value) or "(none)",
    )
    # What every local worker starts with (engine, threads, KMS and its CA, attestation,
    # replay window); the stack fills in the broker, the KMS URL and each archive.
    worker: WorkerOptions = field(default_factory=WorkerOptions)
    max_queue: int = option(
        1024,
        flag=Flag("--max-queue", "queued requests per model", {"type": int}),
        key="limits.max_queue",
        parse=integer,
    )
    max_deliveries: int = 3
    request_timeout_s: float = option(
        30.0,
        flag=Flag("--timeout", "request deadline in seconds", {"type": float}),
        key="limits.timeout_s",
        parse=number,
        dest="timeout",
    )
    max_body_mb: int = option(
        64,
        flag=Flag("--max-body-mb", "request body limit in MiB", {"type": int}),
        key="limits.max_body_mb",
        parse=integer,
    )
    # async jobs (Prefer: respond-async): how long an answer is kept, how many one frontend holds
    job_retention_s: float = option(
        600.0,
        flag=Flag(
            "--job-retention",
            "how long an async job's answer is kept for GET /v2/jobs/{id}",
            {"type": float, "metavar": "SECONDS"},
        ),
        key="limits.job_retention_s",
        parse=number,
        dest="job_retention",
    )
    max_jobs: int = option(
        1024,
        flag=Flag("--max-jobs", "async jobs one frontend holds, pending or kept", {"type": int}),
        key="limits.max_jobs",
        parse=integer,
    )
    dev: bool = option(
        False,
        flag=Flag(
            "--dev",
            "embedded KMS with simulated attestation: NOTHING is hardware-protected",
            {"action": "store_true"},
        ),
        key="dev",
        parse=boolean,
    )
    # models /v2/health/ready waits for; empty: any one model with a live worker
    readiness_require: tuple[str, ...] = option(
        (),
        key="readiness.require",
        parse=names,
        help="models /v2/health/ready waits for (name or name:version); empty: any one",
        show=lambda value, _settings: ",".join(value) or "(any model)",
    )
    kms_port: int = option(
        8083,
        flag=Flag("--kms-port", "port of the embedded KMS", {"type": int}),
        key="kms.port",
        parse=integer,
    )

    def workers_for(self, name: str, version: str) -> int:
        """How many workers ``serve`` starts for a model version (``worker.models``)."""
        given = dict(item.rsplit("=", 1) for item in self.workers_by_model)
        n = given.get(f"{name}:{version}", given.get(name))
        return self.workers_per_model if n is None else int(n)

    @property
    def tls(self) -> bool:
        return not self.insecure_http

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 1024 * 1024

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
        return self.model_store or layout.model_store(self.home)

    @property
    def run_dir(self) -> Path:
        return layout.run_dir(self.home)

    @property
    def tls_dir(self) -> Path:
        return layout.tls_dir(self.home)

    @property
    def kms_ca(self) -> Path:
        """The CA that authenticates the KMS's TLS certificate."""
        return layout.trusted_ca(self.home, self.worker.kms_ca)

    @property
    def token_file(self) -> Path:
        return layout.management_token(self.home)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"
