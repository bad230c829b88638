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
from trustserve.broker import JobSource, connect_job_source
from trustserve.broker.base import queue_name
from trustserve.broker.encrypted import DecryptingJobSource
from trustserve.config import default_home
from trustserve.engines import load_engine
from trustserve.errors import ArchiveError, Forbidden, NotFound, TrustserveError
from trustserve.kms.trust import KmsTrust
from trustserve.logs import setup as setup_logging
from trustserve.worker.keys import key_ring
from trustserve.worker.loop import WorkerLoop
from trustserve.worker.replay import ReplayGuard, nonce_store
from trustserve.worker.sealed import SealedReader

log = logging.getLogger("trustserve.worker")


def preprocessor(manifest: archive.Manifest) -> Callable[[bytes], Any] | None:
    if manifest.preprocessing is None:
        return None
    from trustserve.models.preprocess import preprocess_image

    return functools.partial(preprocess_image, pre=manifest.preprocessing)


async def serve(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else default_home()
    model = archive.load(Path(args.archive))
    manifest = model.manifest
    ca = Path(args.ca) if args.ca else home / "tls" / "ca.pem"
    trust = KmsTrust.from_options(args.kms_identity, args.kms_policy)
    keys = key_ring(
        args.kms, home, args.attestation, ca if ca.exists() else None, trust, args.key_refresh
    )
    plaintext = await asyncio.to_thread(keys.obtain, model)
    engine = load_engine(args.engine, plaintext, manifest, args.threads)
    del model, plaintext
    queue = queue_name(manifest.name, manifest.version)
    source: JobSource = await connect_job_source(args.broker, queue)
    if keys.broker is not None:
        source = DecryptingJobSource(source, keys.broker)
    sealed = None
    if keys.serving is not None:
        nonces = nonce_store(args.broker, home, asyncio.get_running_loop())
        sealed = SealedReader(keys, ReplayGuard(nonces, args.replay_window), manifest)
    log.info("worker %d ready: %s, %s, %d threads", os.getpid(), queue, args.engine, args.threads)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = WorkerLoop(source, queue, manifest, engine, preprocessor(manifest), sealed)
    refresher = asyncio.create_task(keys.keep_fresh(stop))
    try:
        await worker.run(stop)
    except (asyncio.IncompleteReadError, ConnectionError):
        log.warning("worker %d lost its broker connection", os.getpid())
        return 1
    finally:
        refresher.cancel()
        with contextlib.suppress(ConnectionError):
            await source.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", required=True, help="model archive (.tsm) to serve")
    p.add_argument("--broker", required=True, help="unix:PATH (embedded) or rediss://HOST:PORT")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    p.add_argument("--home", default=None, help="TRUSTSERVE_HOME (TLS CA, nonce store)")
    p.add_argument("--kms", default=None, help="KMS URL: keys are released to this worker there")
    p.add_argument("--ca", default=None, help="CA file for the KMS (default HOME/tls/ca.pem)")
    p.add_argument("--kms-identity", default=None, help="trusted KMS identity: key file or base64")
    p.add_argument("--kms-policy", default=None, help="or: verify the KMS bundle with this policy")
    p.add_argument("--key-refresh", type=float, default=60.0, help="serving key refresh, seconds")
    p.add_argument(
        "--attestation",
        default="sim",
        choices=["sim", "tpm", "tdx", "sev-snp", "sgx"],
        help="evidence provider (sim is for development: the KMS must opt in)",
    )
    p.add_argument("--replay-window", type=float, default=300.0, help="sealed freshness, seconds")


EXIT_UNSERVABLE = 3  # the supervisor does not restart a worker that exits with this


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except (ArchiveError, Forbidden, NotFound) as exc:
        log.error("worker cannot serve %s: %s", args.archive, exc)
        return EXIT_UNSERVABLE
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
