"""A worker process: load one model into memory, then serve its queue until told to stop.

Started by the supervisor of ``trustserve up`` / ``serve``, or by hand with
``trustserve worker`` on any host that reaches the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustserve import archive
from trustserve.broker import connect_job_source
from trustserve.broker.base import queue_name
from trustserve.engines import load_engine
from trustserve.errors import TrustserveError
from trustserve.logs import setup as setup_logging
from trustserve.worker.loop import WorkerLoop

log = logging.getLogger("trustserve.worker")


def model_bytes(model: archive.ModelArchive, args: argparse.Namespace) -> bytes:
    """The plaintext model, in memory only."""
    if not model.encrypted:
        return model.payload
    from trustserve.worker.keys import decrypt_with_released_key

    return decrypt_with_released_key(model, args)


def preprocessor(manifest: archive.Manifest) -> Callable[[bytes], Any] | None:
    if manifest.preprocessing is None:
        return None
    from trustserve.models.preprocess import preprocess_image

    return functools.partial(preprocess_image, pre=manifest.preprocessing)


async def serve(args: argparse.Namespace) -> int:
    model = archive.load(Path(args.archive))
    manifest = model.manifest
    engine = load_engine(args.engine, model_bytes(model, args), manifest, args.threads)
    del model
    queue = queue_name(manifest.name, manifest.version)
    source = await connect_job_source(args.broker, queue)
    log.info("worker %d ready: %s, %s, %d threads", os.getpid(), queue, args.engine, args.threads)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = WorkerLoop(source, queue, manifest, engine, preprocessor(manifest))
    try:
        await worker.run(stop)
    except (asyncio.IncompleteReadError, ConnectionError):
        log.warning("worker %d lost its broker connection", os.getpid())
        return 1
    finally:
        with contextlib.suppress(ConnectionError):
            await source.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", required=True, help="model archive (.tsm) to serve")
    p.add_argument("--broker", required=True, help="unix:PATH (embedded) or rediss://HOST:PORT")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino")
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--home", default=None, help="TRUSTSERVE_HOME (keys, attestation)")
    p.add_argument("--kms", default=None, help="KMS URL for encrypted archives")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except TrustserveError as exc:
        log.error("worker cannot start: %s", exc)
        return 2


def main() -> int:
    parser = argparse.ArgumentParser(prog="trustserve-worker")
    add_arguments(parser)
    setup_logging()
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
