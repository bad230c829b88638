"""``trustserve up``, ``serve`` and ``worker``: running the stack."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from trustserve import archive, files
from trustserve.broker.base import queue_name
from trustserve.errors import ConfigError
from trustserve.files import default_home
from trustserve.stack import configfile
from trustserve.stack.config import Settings
from trustserve.worker.options import WorkerOptions

log = logging.getLogger("trustserve")
DEMO_ARCHIVES = ("resnet50", "resnet50-fp32", "digits")


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from flags, ``TRUSTSERVE_*``, the configuration file and the defaults."""
    a = configfile.apply(args, configfile.resolve(args))
    s = Settings(home=a.home or default_home())
    given = {
        "model_store": a.model_store,
        "host": a.host,
        "management_host": getattr(a, "management_host", None),
        "inference_port": a.port,
        "management_port": a.management_port,
        "metrics_port": a.metrics_port,
        "tls": None if a.insecure_http is None else not a.insecure_http,
        "tls_cert": a.tls_cert,
        "tls_key": a.tls_key,
        "broker_url": a.broker,
        "workers_per_model": a.workers,
        "request_timeout_s": a.timeout,
        "max_queue": a.max_queue,
        "max_body_bytes": None if a.max_body_mb is None else a.max_body_mb * 1024 * 1024,
        "job_retention_s": a.job_retention,
        "max_jobs": a.max_jobs,
        "dev": a.dev,
        "kms_port": a.kms_port,
        "grpc_port": a.grpc_port,
        "readiness_require": getattr(a, "readiness_require", None),
    }
    for name, value in given.items():
        if value is not None:
            setattr(s, name, value)
    s.worker = WorkerOptions.from_args(a, home=s.home)
    return s


# the worker options that ``up`` and ``serve`` pass on to their local workers
WORKER_FLAGS = (
    "home",
    "engine",
    "threads",
    "kms",
    "kms_ca",
    "kms_identity",
    "kms_policy",
    "attestation",
    "attestation_options",
    "replay_window",
    "key_refresh",
    "collateral_dir",
    "pccs_url",
    "vcek_dir",
    "kds_url",
)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help=f"configuration file (default ${configfile.CONFIG_ENV}, else HOME/trustserve.yaml)",
    )


def _serve_options(p: argparse.ArgumentParser) -> None:
    """Flags left out stay None: the environment, the file or the default decides."""
    _config_option(p)
    WorkerOptions.add_arguments(p, only=WORKER_FLAGS, defaults=False)
    p.add_argument("--model-store", type=Path, help="model archives (default HOME/models)")
    p.add_argument("--host", help="inference address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="inference port (default 8080)")
    p.add_argument("--management-port", type=int, help="default 8081, on 127.0.0.1")
    p.add_argument("--metrics-port", type=int, help="default 8082, on 127.0.0.1")
    p.add_argument(
        "--grpc-port", type=int, help="gRPC inference port on --host (default 8084; 0: no gRPC)"
    )
    p.add_argument(
        "--insecure-http", action="store_true", default=None, help="plain HTTP (NOT secure)"
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate (default: the local CA's)")
    p.add_argument("--tls-key", type=Path, help="its private key")
    p.add_argument("--broker", help="rediss://HOST:PORT/?... to scale out (default: embedded)")
    p.add_argument(
        "--workers", type=int, help="local worker processes per model (default: one per core)"
    )
    p.add_argument("--timeout", type=float, help="request deadline in seconds (default 30)")
    p.add_argument("--max-queue", type=int, help="queued requests per model (default 1024)")
    p.add_argument("--max-body-mb", type=int, help="request body limit in MiB (default 64)")
    p.add_argument(
        "--job-retention",
        type=float,
        metavar="SECONDS",
        help="how long an async job's answer is kept for GET /v2/jobs/{id} (default 600)",
    )
    p.add_argument(
        "--max-jobs", type=int, help="async jobs one frontend holds, pending or kept (default 1024)"
    )
    p.add_argument("--kms-port", type=int, help="port of the embedded KMS (default 8083)")
    p.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="embedded KMS with simulated attestation: NOTHING is hardware-protected",
    )


def cmd_up(args: argparse.Namespace) -> int:
    """Development: demo models built locally, encrypted into the store by an embedded KMS."""
    settings = _settings(args)
    settings.dev = True
    from trustserve.kms.embedded import development_kms
    from trustserve.kms.tools import encrypt_model_file
    from trustserve.models.demo import build_demo_models
    from trustserve.stack.banner import sample_image
    from trustserve.stack.server import check_ports

    check_ports(settings, embedded_kms=True)  # before the demo models' build (tens of s)
    demo = build_demo_models(Path(args.demo_dir) if args.demo_dir else demo_cache())
    service = development_kms(settings.home)
    settings.store.mkdir(parents=True, exist_ok=True)
    for name in DEMO_ARCHIVES:
        target = settings.store / demo[name].name
        if not target.exists():
            encrypt_model_file(demo[name], target, service)
            print(f"encrypted {name} into {target}", flush=True)
    if not settings.readiness_require:  # ready (and the banner) once every demo version serves
        heads = [archive.read_header(demo[n]).manifest for n in DEMO_ARCHIVES]
        settings.readiness_require = tuple(queue_name(m.name, m.version) for m in heads)
    image = sample_image(settings)
    if not image.exists():
        from trustserve.models.calibration import synthetic_image

        files.write_atomic(image, synthetic_image(7))
    return _run(settings, service)


def demo_cache() -> Path:
    """Plaintext demo models are the model owner's: kept outside TRUSTSERVE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trustserve" / "demo-models"


def cmd_serve(args: argparse.Namespace) -> int:
    return _run(_settings(args))


def _run(settings: Settings, kms: Any = None) -> int:
    from trustserve.stack.banner import banner
    from trustserve.stack.server import Stack

    stack = Stack(settings, kms)

    async def main() -> None:
        task = asyncio.create_task(stack.run())
        up = asyncio.create_task(stack.up.wait())
        await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        if stack.up.is_set() and settings.readiness_require:
            await _wait_ready(stack, task)
        if stack.up.is_set() and not task.done():
            entries = stack.registry.entries()
            names = sorted({e.manifest.name for e in entries})
            images = sorted({e.manifest.name for e in entries if e.manifest.preprocessing})
            print(banner(settings, names, images), flush=True)
        await task

    _asyncio_run(main())
    return 0


async def _wait_ready(stack: Any, task: asyncio.Task[None]) -> None:
    """The banner's commands work when it prints: wait for the required models' workers
    (a demo model's worker loads for seconds after the front doors listen)."""
    ready, waiting = await stack.readiness()
    if not ready:
        print(f"listening; waiting for workers of: {', '.join(waiting)}", flush=True)
    while not ready and not task.done():
        await asyncio.sleep(0.1)
        ready, waiting = await stack.readiness()


def _asyncio_run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def cmd_worker(args: argparse.Namespace) -> int:
    from trustserve.worker.main import run

    args = configfile.apply(args, configfile.resolve(args))
    opts = WorkerOptions.from_args(args)
    workers = 1 if args.workers is None else args.workers
    if workers <= 1:
        return run(opts)
    path = opts.archive
    if path is None or opts.broker is None:
        raise ConfigError("trustserve worker needs --archive and --broker")
    from trustserve import archive
    from trustserve.broker.base import queue_name
    from trustserve.stack.supervisor import WorkerSupervisor
    from trustserve.worker.exits import EXIT_UNSERVABLE

    manifest = archive.read_header(path).manifest
    queue = queue_name(manifest.name, manifest.version)
    stop = asyncio.Event()
    unservable: list[str] = []

    def give_up(_queue: str, reason: str) -> None:
        unservable.append(reason)
        if len(unservable) == workers:  # none of them can ever serve: say so and exit
            stop.set()

    supervisor = WorkerSupervisor(opts, dict(os.environ), on_unservable=give_up)

    async def main() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await supervisor.scale(queue, path, workers)
        try:
            await stop.wait()
        finally:
            await supervisor.stop_all()

    asyncio.run(main())
    if unservable:
        log.error("no worker can serve %s: %s", queue, unservable[0])
        return EXIT_UNSERVABLE
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="build the demo models and run the whole stack (embedded)")
    _serve_options(p)
    p.add_argument("--demo-dir", help="where the plaintext demo models are built (a cache)")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("serve", help="run the stack on the archives in the model store")
    _serve_options(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("worker", help="run worker processes for one model against a broker")
    _config_option(p)
    WorkerOptions.add_arguments(p, defaults=False)
    p.add_argument("--workers", type=int, help="worker processes to run (default 1)")
    p.set_defaults(func=cmd_worker)
    config = sub.add_parser("config", help="the effective configuration")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = actions.add_parser("show", help="print every setting, its value and where it came from")
    _serve_options(p)
    p.set_defaults(func=cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> int:
    """What ``serve`` with these flags would run with, setting by setting."""
    resolved = configfile.resolve(args)
    s = _settings(args)
    effective = {
        "home": s.home,
        "model_store": s.store,
        "listen.host": s.host,
        "listen.port": s.inference_port,
        "listen.management_host": s.management_host,
        "listen.management_port": s.management_port,
        "listen.metrics_port": s.metrics_port,
        "listen.grpc_port": s.grpc_port or "(off)",
        "tls.insecure_http": not s.tls,
        "tls.cert": s.tls_cert or s.tls_dir / "server.pem",
        "tls.key": s.tls_key or s.tls_dir / "server-key.pem",
        "kms.url": s.kms_url or ("(embedded)" if s.dev else "(none)"),
        "kms.ca": s.kms_ca,
        "kms.port": s.kms_port,
        "kms.identity": s.worker.kms_identity or ("(embedded)" if s.dev else "(none)"),
        "kms.policy": s.worker.kms_policy or "(none)",
        "broker.url": s.broker_url or "(embedded)",
        "attestation.provider": s.worker.attestation,
        "attestation.options": ",".join(s.worker.attestation_options or ()) or "(none)",
        "worker.engine": s.worker.engine,
        "worker.threads": s.worker.threads,
        "worker.per_model": s.workers_per_model,
        "worker.replay_window": s.worker.replay_window,
        "worker.key_refresh": s.worker.key_refresh,
        "limits.timeout_s": s.request_timeout_s,
        "limits.max_queue": s.max_queue,
        "limits.max_body_mb": s.max_body_bytes // (1024 * 1024),
        "limits.job_retention_s": s.job_retention_s,
        "limits.max_jobs": s.max_jobs,
        "readiness.require": ",".join(s.readiness_require) or "(any model)",
        "dev": s.dev,
    }
    print(f"configuration file: {resolved.file or '(none)'}")
    for key in configfile.KEYS:
        source = resolved.sources.get(key.dest, "default")
        print(f"{key.name:24} {effective[key.name]!s:40} {source}")
    return 0
