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
from trustserve.stack import configfile
from trustserve.stack.config import Settings
from trustserve.stack.options import add_serve_arguments, effective, settings_from
from trustserve.worker.options import WorkerOptions

log = logging.getLogger("trustserve")
DEMO_ARCHIVES = ("resnet50", "resnet50-fp32", "digits")


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from flags, ``TRUSTSERVE_*``, the configuration file and the defaults."""
    return settings_from(configfile.apply(args, configfile.resolve(args)))


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help=f"configuration file (default ${configfile.CONFIG_ENV}, else HOME/trustserve.yaml)",
    )


def _serve_options(p: argparse.ArgumentParser) -> None:
    """Flags left out stay None: the environment, the file or the default decides."""
    _config_option(p)
    add_serve_arguments(p)


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
    s = settings_from(configfile.apply(args, resolved))
    print(f"configuration file: {resolved.file or '(none)'}")
    for opt, value in effective(s):
        source = resolved.sources.get(opt.dest, "default")
        print(f"{opt.key:24} {value!s:40} {source}")
    return 0
