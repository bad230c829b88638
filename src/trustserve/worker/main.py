"""A worker process: load one model into memory, then serve its queue until told to stop.

Started by the supervisor of ``trustserve up`` / ``serve``, or by hand with
``trustserve worker`` on any host that reaches the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from trustserve import archive
from trustserve.attestation.registry import clear_local_jobs, parse_options
from trustserve.broker import JobSource, connect_job_source, is_local, takes_clear
from trustserve.broker.base import queue_name
from trustserve.broker.encrypted import DecryptingJobSource
from trustserve.engines import engine_factory
from trustserve.engines.base import Engine, EngineFactory
from trustserve.errors import (
    ArchiveError,
    ConfigError,
    Forbidden,
    NotFound,
    TrustserveError,
    Unavailable,
)
from trustserve.home import default_home, run_dir, trusted_ca
from trustserve.logs import setup as setup_logging
from trustserve.worker.cores import HostCores, LoneWide, host_cores, trim_heap
from trustserve.worker.exits import EXIT_UNSERVABLE, UNSERVABLE
from trustserve.worker.keys import KeyRing, key_ring
from trustserve.worker.loop import WorkerLoop
from trustserve.worker.options import WorkerOptions, parser
from trustserve.worker.replay import ReplayGuard, nonce_store
from trustserve.worker.sealed import SealedReader

log = logging.getLogger("trustserve.worker")


def preprocessor(manifest: archive.Manifest) -> Callable[[bytes], Any] | None:
    if manifest.preprocessing is None:
        return None
    from trustserve.imaging import preprocess_image

    return functools.partial(preprocess_image, pre=manifest.preprocessing)


def obtain(keys: KeyRing, model: archive.ModelArchive, wait_s: float) -> bytes:
    """The plaintext model, released by the KMS. A KMS that does not answer yet is asked
    again for up to ``wait_s`` (the stack starts its workers while its KMS starts); each
    attempt is a whole release, attestation and checks included, and a refusal is final."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return keys.obtain(model)
        except Unavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


async def widen(
    shared: LoneWide, factory: EngineFactory, plaintext: bytes, manifest: archive.Manifest, n: int
) -> None:
    """Builds the wide session; a worker whose wide session fails to build stays narrow."""
    try:
        wide = await asyncio.to_thread(factory, plaintext, manifest, n)
        del plaintext  # the last reference: the model's bytes go before the trim
        shared.widen(wide, n)
        trim_heap()
    except Exception as exc:  # an engine's own errors too: the narrow session still serves
        log.warning(
            "worker %d stays at its --threads: the wide session failed: %s", os.getpid(), exc
        )
    else:
        log.info("worker %d: a lone batch now runs on %d threads", os.getpid(), n)


async def serve(opts: WorkerOptions) -> int:
    if opts.archive is None or opts.broker is None:
        raise ConfigError("a worker needs --archive and --broker")
    log.info("worker %d starting with %s", os.getpid(), " ".join(opts.to_argv()))
    home = opts.home or default_home()
    t0 = time.monotonic()
    model = archive.load(opts.archive)
    t_read = time.monotonic()
    manifest = model.manifest
    ca = trusted_ca(home, opts.kms_ca)
    options = parse_options(opts.attestation_options)
    trust = opts.kms_trust()
    keys = key_ring(
        opts.kms,
        home,
        opts.attestation,
        ca if ca.exists() else None,
        trust,
        opts.key_refresh,
        **options,
    )
    # the engine's library imports (a few hundred ms) while the KMS releases the keys
    factory, plaintext = await asyncio.gather(
        asyncio.to_thread(engine_factory, opts.engine),
        asyncio.to_thread(obtain, keys, model, opts.kms_wait),
    )
    t_keys = time.monotonic()
    del model  # the ciphertext: not held while the engine builds its copy (peak RSS)
    engine: Engine = factory(plaintext, manifest, opts.threads)
    t_engine = time.monotonic()
    lone = host_cores() if opts.lone_threads is None else opts.lone_threads
    shared: LoneWide | None = None
    if lone > opts.threads:  # the wide session builds while the narrow one answers
        shared = LoneWide(engine, HostCores(run_dir(home) / "cores.lock"))
        engine = shared
        widening = asyncio.create_task(widen(shared, factory, plaintext, manifest, lone))
    del plaintext
    queue = queue_name(manifest.name, manifest.version)
    clear = is_local(opts.broker) and clear_local_jobs(opts.attestation)
    source: JobSource = await connect_job_source(opts.broker, queue, opts.broker_spread, clear)
    if keys.broker is not None and not takes_clear(source):
        source = DecryptingJobSource(source, keys.broker)
    sealed = None
    if keys.serving is not None:
        nonces = nonce_store(opts.broker, queue, home, asyncio.get_running_loop())
        sealed = SealedReader(keys, ReplayGuard(nonces, opts.replay_window), manifest)
    log.info(
        "worker %d ready: %s, %s, %d threads, %s (archive read %.2f s, keys + decrypt %.2f s, "
        "engine load %.2f s)",
        os.getpid(),
        queue,
        opts.engine,
        opts.threads,
        f"{lone} while alone on the host" if shared else "lone-threads off",
        t_read - t0,
        t_keys - t_read,
        t_engine - t_keys,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = WorkerLoop(
        source,
        queue,
        manifest,
        engine,
        preprocessor(manifest),
        sealed,
        keys.drain_refreshes,
        shared.cores.busy if shared else contextlib.nullcontext,
    )
    refresher = asyncio.create_task(keys.keep_fresh(stop))
    try:
        await worker.run(stop)
    except (asyncio.IncompleteReadError, ConnectionError):
        log.warning("worker %d lost its broker connection", os.getpid())
        return 1
    finally:
        refresher.cancel()
        if shared is not None:
            widening.cancel()
            log.info(
                "worker %d ran %d batches wide, %d narrow",
                os.getpid(),
                shared.wide_runs,
                shared.narrow_runs,
            )
        with contextlib.suppress(ConnectionError):
            await source.close()
    return 0


def run(opts: WorkerOptions) -> int:
    try:
        return asyncio.run(serve(opts))
    except (ArchiveError, ConfigError, Forbidden, NotFound) as exc:
        # a bad archive, a refused release or a configuration that cannot work: restarting
        # would only fail again, so the worker says why and is not restarted
        log.error("%s%s", UNSERVABLE, exc)
        return EXIT_UNSERVABLE
    except TrustserveError as exc:  # e.g. the KMS or the broker unreachable: worth a retry
        log.error("worker cannot start: %s", exc)
        return 2


def main() -> int:
    args = parser().parse_args()
    setup_logging()
    return run(WorkerOptions.from_args(args))


if __name__ == "__main__":
    raise SystemExit(main())
