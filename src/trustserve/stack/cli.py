"""``trustserve up``, ``serve`` and ``worker``: running the stack."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from trustserve.errors import ConfigError
from trustserve.files import default_home
from trustserve.stack.config import Settings
from trustserve.worker.options import WorkerOptions

log = logging.getLogger("trustserve")
DEMO_ARCHIVES = ("resnet50", "resnet50-fp32", "digits")


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings(home=args.home or default_home())
    s.model_store = Path(args.model_store) if args.model_store else None
    s.host = args.host
    s.inference_port, s.management_port, s.metrics_port = (
        args.port,
        args.management_port,
        args.metrics_port,
    )
    s.tls = not args.insecure_http
    if args.workers is not None:
        s.workers_per_model = args.workers
    s.worker = WorkerOptions.from_args(args, home=s.home)
    s.request_timeout_s = args.timeout
    s.max_queue = args.max_queue
    s.max_body_bytes = args.max_body_mb * 1024 * 1024
    s.broker_url = args.broker
    s.dev = args.dev
    s.kms_port = args.kms_port
    return s


# the worker options that ``up`` and ``serve`` pass on to their local workers
WORKER_FLAGS = ("home", "engine", "threads", "kms", "kms_ca", "attestation", "replay_window")


def _serve_options(p: argparse.ArgumentParser) -> None:
    WorkerOptions.add_arguments(p, only=WORKER_FLAGS)
    p.add_argument("--model-store", help="directory of model archives (default HOME/models)")
    p.add_argument("--host", default="127.0.0.1", help="inference address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="inference port")
    p.add_argument("--management-port", type=int, default=8081)
    p.add_argument("--metrics-port", type=int, default=8082)
    p.add_argument("--insecure-http", action="store_true", help="serve plain HTTP (NOT secure)")
    p.add_argument(
        "--broker",
        default=None,
        help="rediss://HOST:PORT/?... to scale out (default: the embedded broker)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes per model (default: one per core; 0: none)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="request deadline in seconds")
    p.add_argument("--max-queue", type=int, default=1024, help="queued requests per model")
    p.add_argument("--max-body-mb", type=int, default=64, help="request body limit in MiB")
    p.add_argument("--kms-port", type=int, default=8083, help="port of the embedded KMS")
    p.add_argument(
        "--dev",
        action="store_true",
        help="embedded KMS with simulated attestation: NOTHING is hardware-protected",
    )


def cmd_up(args: argparse.Namespace) -> int:
    """Development: demo models built locally, encrypted into the store by an embedded KMS."""
    settings = _settings(args)
    settings.dev = True
    from trustserve.kms.embedded import development_kms
    from trustserve.kms.tools import encrypt_model_file
    from trustserve.models.demo import build_demo_models

    demo = build_demo_models(Path(args.demo_dir) if args.demo_dir else demo_cache())
    service = development_kms(settings.home)
    settings.store.mkdir(parents=True, exist_ok=True)
    for name in DEMO_ARCHIVES:
        target = settings.store / demo[name].name
        if not target.exists():
            encrypt_model_file(demo[name], target, service)
            print(f"encrypted {name} into {target}", flush=True)
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
        await asyncio.sleep(0.5)
        if not task.done():
            names = sorted({e.manifest.name for e in stack.registry.entries()})
            print(banner(settings, names), flush=True)
        await task

    _asyncio_run(main())
    return 0


def _asyncio_run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def cmd_worker(args: argparse.Namespace) -> int:
    from trustserve.worker.main import run

    opts = WorkerOptions.from_args(args)
    if args.workers <= 1:
        return run(opts)
    path = opts.archive
    if path is None or opts.broker is None:
        raise ConfigError("trustserve worker needs --archive and --broker")
    from trustserve import archive
    from trustserve.broker.base import queue_name
    from trustserve.stack.supervisor import WorkerSupervisor
    from trustserve.worker.main import EXIT_UNSERVABLE

    manifest = archive.read_header(path).manifest
    queue = queue_name(manifest.name, manifest.version)
    stop = asyncio.Event()
    unservable: list[str] = []

    def give_up(_queue: str, reason: str) -> None:
        unservable.append(reason)
        if len(unservable) == args.workers:  # none of them can ever serve: say so and exit
            stop.set()

    supervisor = WorkerSupervisor(opts, dict(os.environ), on_unservable=give_up)

    async def main() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await supervisor.scale(queue, path, args.workers)
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
    WorkerOptions.add_arguments(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes to run")
    p.set_defaults(func=cmd_worker)
