"""The whole serving stack in one process, started step by step and stopped in reverse.

Order of start-up: TLS files, the embedded KMS (``up`` / ``--dev``), the broker,
the workers (started while the KMS begins to listen: their imports and archive
reads overlap the rest of the start-up), the frontend's keys (broker key by
attestation), the gRPC inference port, then the three HTTP front doors (inference,
management, metrics). Shutdown closes the HTTP front doors first, then gRPC, then
stops the workers, the broker, the KMS client and last the KMS.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from trustserve.attestation import make_provider
from trustserve.attestation.registry import clear_local_jobs
from trustserve.broker import Broker, open_broker
from trustserve.broker.encrypted import EncryptingBroker
from trustserve.encoding import b64
from trustserve.errors import ConfigError
from trustserve.files import read_or_create_token
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.stack.config import Settings
from trustserve.stack.http import Server, http_server, trusted_proxies
from trustserve.stack.supervisor import WorkerSupervisor
from trustserve.tls import TlsFiles, ensure_local_ca

if TYPE_CHECKING:  # imported where used: the workers start before these are needed
    import grpc

    from trustserve.frontend.inference import InferenceApi
    from trustserve.frontend.jobs import JobStore
    from trustserve.frontend.keys import FrontendKeys
    from trustserve.kms.service import KmsService

log = logging.getLogger("trustserve")


LOOPBACK = ("127.0.0.1/32", "::1/128")


class Stack:
    def __init__(self, settings: Settings, kms: KmsService | None = None) -> None:
        self.settings = settings
        self.kms = kms
        self._proxies = trusted_proxies(settings.trusted_proxies)  # refused before any work
        self.metrics = Metrics()
        self.registry = ModelRegistry(settings.store)
        self.supervisor = WorkerSupervisor(
            replace(settings.worker, home=settings.home),
            on_unservable=self.registry.mark_unservable,
            on_restart=lambda queue: self.metrics.restarted(self.registry.entries(), queue),
        )
        self.broker: Broker
        self.keys: FrontendKeys | None = None
        self._broker_key: bytes | None = None  # once released by the KMS
        self._local_clear = False  # embedded jobs in clear (clear_local_jobs)
        self._tls_files: TlsFiles
        self._kms_server: Server | None = None
        self._kms_task: asyncio.Task[None] | None = None
        self._embedded_identity: str | None = None
        self._servers: list[Server] = []
        self._grpc: grpc.aio.Server | None = None
        self.up = asyncio.Event()  # set once every front door listens
        self._inference: InferenceApi | None = None
        self._access_log: logging.Logger | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        self._tls_files = ensure_local_ca(self.settings.tls_dir)
        self._check_ports()
        try:
            kms_url = self._start_kms()
            worker_url = await self._open_broker()
            # the workers import their engine and read their archive while the KMS and the
            # frontend start; they wait for the KMS (--kms-wait) before asking it for keys
            await self._start_workers(worker_url, kms_url)
            await self._kms_listening()
            if kms_url is not None:
                await self._obtain_keys(kms_url)
            else:
                log.warning(
                    "!!! no key service: broker payloads are NOT encrypted (plaintext mode)"
                )
            inference = self._inference = self._inference_api()
            await self._start_grpc(inference)
            serving = [asyncio.create_task(s.serve()) for s in self._front_doors(inference)]
            while not all(s.started for s in self._servers):
                if any(t.done() for t in serving):
                    break  # one failed to start: gather below raises its error
                await asyncio.sleep(0.02)
            else:
                gc.freeze()  # start-up's objects: never scanned again by the collector
                self.up.set()
            await asyncio.gather(*serving)
        finally:
            await self._shutdown()

    async def readiness(self) -> tuple[bool, list[str]]:
        """What ``/v2/health/ready`` says: (ready, models served) or (not, models waited for)."""
        if self._inference is None:
            return False, ["the front doors"]
        return await self._inference.readiness()

    def stop(self) -> None:
        for srv in self._servers:
            srv.should_exit = True

    # -- the steps, in start-up order ----------------------------------------------

    def _check_ports(self) -> None:
        check_ports(self.settings, self.kms is not None)

    def _start_kms(self) -> str | None:
        """The embedded KMS of ``up`` / ``--dev`` on 127.0.0.1 (starting to listen; see
        ``_kms_listening``); else the configured URL."""
        s = self.settings
        if s.kms_url is not None or not (s.dev or self.kms is not None):
            return s.kms_url
        from trustserve.kms.app import create_app
        from trustserve.kms.embedded import development_kms
        from trustserve.kms.peers import Peers

        service = self.kms or development_kms(s.home)
        # the stack made this KMS, so it knows its identity and tells its own parts
        identity = service.state.identity_key().public_key().public_bytes_raw()
        self._embedded_identity = b64(identity)
        provider = make_provider(s.attestation, s.home, **s.attestation_options)
        server = http_server(
            # only this stack's own frontend and workers reach a KMS on 127.0.0.1: they draw
            # on the reserved budget, never on the one anonymous clients share
            create_app(service, provider, peers=Peers.configured(reserved=LOOPBACK)),
            "127.0.0.1",
            s.kms_port,
            self._tls_files,
        )
        self._kms_server, self._kms_task = server, asyncio.create_task(server.serve())
        return f"https://127.0.0.1:{s.kms_port}"

    async def _kms_listening(self) -> None:
        server, task = self._kms_server, self._kms_task
        if server is None or task is None:
            return
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.01)

    def _kms_trust(self) -> tuple[str | None, Path | None]:
        """Which KMS identity the frontend and workers believe: the embedded KMS's, or the
        one configured (``--kms-identity`` / ``--kms-policy``)."""
        if self._embedded_identity is not None:
            return self._embedded_identity, None
        return self.settings.worker.kms_identity, self.settings.worker.kms_policy

    async def _open_broker(self) -> str:
        """Opens the broker; returns the URL workers reach it at."""
        s = self.settings
        clear = s.broker_url is None and clear_local_jobs(s.attestation)
        self.broker, worker_url = await open_broker(
            s.broker_url, s.run_dir / "broker.sock", s.max_queue, s.max_deliveries, clear
        )
        self._local_clear = clear
        self._plain_broker = self.broker  # before EncryptingBroker wraps it
        return worker_url

    async def _obtain_keys(self, kms_url: str) -> None:
        """The broker key, released to this frontend by attestation: payloads are sealed."""
        from trustserve.frontend.keys import FrontendKeys
        from trustserve.keyrelease.client import KmsClient

        s = self.settings
        identity, policy = self._kms_trust()
        trust = replace(self.settings.worker, kms_identity=identity, kms_policy=policy).kms_trust()
        client = KmsClient(kms_url, ca_file=s.kms_ca, trust=trust)
        provider = make_provider(s.attestation, s.home, **s.attestation_options)
        self.keys = FrontendKeys(client, provider, on_bundle=self.metrics.kms_log.seen)
        self._broker_key = await self.keys.broker_key()
        if self._local_clear:  # one memory domain: docs/security.md, "Local jobs and ..."
            log.info("local jobs are not sealed under the broker key: one memory domain")
            return
        self.broker = EncryptingBroker(self.broker, self._broker_key)

    async def _start_workers(self, worker_url: str, kms_url: str | None) -> None:
        identity, policy = self._kms_trust()
        self.supervisor.options = replace(
            self.supervisor.options,
            broker=worker_url,
            kms=kms_url,
            kms_ca=self.settings.kms_ca,
            kms_identity=identity,
            kms_policy=policy,
            kms_wait=30.0 if self._kms_server is not None else self.supervisor.options.kms_wait,
        )
        for entry in self.registry.scan(self.settings.workers_for):
            if entry.encrypted and kms_url is None:
                # no worker could ever open it: say so now instead of starting workers that fail
                m = entry.manifest
                reason = (
                    f"model {m.name} version {m.version} is encrypted and this server has no "
                    "key service (start it with --kms URL, or --dev for development)"
                )
                log.error("%s", reason)
                self.registry.mark_unservable(entry.queue, reason)
                continue
            await self.supervisor.scale(entry.queue, entry.path, entry.min_workers)

    def _job_store(self) -> JobStore:
        """Async job answers: in Redis with the Redis broker (any frontend hands them out),
        else in this frontend's memory."""
        from trustserve.frontend.jobs import MemoryJobStore

        if self.settings.broker_url is not None:
            from trustserve.broker.redis import RedisStreamsBroker
            from trustserve.broker.redis_jobs import RedisJobStore
            from trustserve.broker.shards import ShardedBroker

            if isinstance(self._plain_broker, ShardedBroker):
                return self._plain_broker.job_store()
            if isinstance(self._plain_broker, RedisStreamsBroker):
                broker = self._plain_broker
                replicas = 1 if broker.config.sentinels else 0
                return RedisJobStore(broker.client, broker.keys.prefix, replicas)
        return MemoryJobStore()

    def _tls(self) -> TlsFiles | None:
        """The front doors' certificate and key: the operator's, else the local CA's."""
        s = self.settings
        tls = self._tls_files if s.tls else None
        if tls is not None and s.tls_cert is not None and s.tls_key is not None:
            tls = TlsFiles(tls.ca, s.tls_cert, s.tls_key)
        return tls

    def _inference_api(self) -> InferenceApi:
        from trustserve.frontend.dataplane import DataPlane
        from trustserve.frontend.inference import InferenceApi
        from trustserve.frontend.jobs import Jobs

        s = self.settings
        plane = DataPlane(
            self.registry,
            self.broker,
            self.metrics,
            timeout_s=s.request_timeout_s,
            keys=self.keys,
            require=s.readiness_require,
        )
        return InferenceApi(
            plane,
            max_body_bytes=s.max_body_bytes,
            jobs=Jobs(
                self._job_store(),
                self._broker_key,
                retention_s=s.job_retention_s,
                pending_s=s.request_timeout_s,
                max_jobs=s.max_jobs,
            ),
        )

    async def _start_grpc(self, inference: InferenceApi) -> None:
        """Open Inference Protocol v2 over gRPC, served through the same ``InferenceApi``."""
        s = self.settings
        if not s.grpc_port:
            return
        from trustserve.frontend.grpc_service import GrpcInference, grpc_server

        tls = self._tls()
        keypair = None if tls is None else (tls.key.read_bytes(), tls.cert.read_bytes())
        self._grpc = grpc_server(
            GrpcInference(inference.plane), s.host, s.grpc_port, keypair, s.max_body_bytes
        )
        await self._grpc.start()

    def _front_doors(self, inference: InferenceApi) -> list[Server]:
        from trustserve.frontend.management import ManagementApi
        from trustserve.frontend.repository import RepositoryApi

        s = self.settings
        tls = self._tls()
        if tls is None:
            log.warning(
                "!!! TLS is OFF (--insecure-http): clients' data crosses the network in clear"
            )
        management = ManagementApi(self.registry, self.broker, self.supervisor, s.workers_per_model)
        metrics_app = Starlette(routes=[Route("/metrics", self.metrics_endpoint)])
        token = read_or_create_token(s.token_file)
        repository = RepositoryApi(
            self.registry, self.broker, self.supervisor, s.workers_per_model, token
        )
        routes = inference.app()
        routes.router.routes.extend(repository.routes())  # the model_repository extension
        inference_app: ASGIApp = routes
        management_app: ASGIApp = management.app(token, s.token_file)  # a 401 names the file
        if s.access_log is not None:
            from trustserve.frontend.access_log import AccessLog, open_access_log

            self._access_log = open_access_log(s.access_log)
            inference_app = AccessLog(inference_app, self._access_log)
            management_app = AccessLog(management_app, self._access_log)
        proxies = self._proxies
        self._servers = [
            http_server(inference_app, s.host, s.inference_port, tls, proxies),
            http_server(management_app, s.management_host, s.management_port, tls, proxies),
            http_server(metrics_app, s.management_host, s.metrics_port, tls, proxies),
        ]
        return self._servers

    async def _shutdown(self) -> None:
        """HTTP front doors are closed by now; then gRPC, the workers, the broker, our KMS
        client, the KMS."""
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        await self.supervisor.stop_all()
        if hasattr(self, "broker"):
            await self.broker.close()
        if self.keys is not None:
            self.keys.client.close()
        if self._kms_server is not None and self._kms_task is not None:
            self._kms_server.should_exit = True
            await self._kms_task
        if self._access_log is not None:
            from trustserve.frontend.access_log import close_access_log

            close_access_log(self._access_log)

    async def metrics_endpoint(self, request: Request) -> Response:
        local = self.supervisor.workers
        await self.metrics.sample(self.registry.entries(), self.broker, lambda q: len(local(q)))
        return await self.metrics.endpoint(request)


def check_ports(settings: Settings, embedded_kms: bool = False) -> None:
    """Before any work: every port the stack will listen on is free, or one ConfigError
    naming each that is not (with the setting that moves it)."""
    s = settings
    wanted = [
        (s.host, s.inference_port, "inference", "--port / listen.port"),
        (s.management_host, s.management_port, "management", "--management-port"),
        (s.management_host, s.metrics_port, "metrics", "--metrics-port"),
    ]
    if s.grpc_port:
        wanted.append((s.host, s.grpc_port, "gRPC inference", "--grpc-port / listen.grpc_port"))
    if s.kms_url is None and (s.dev or embedded_kms):
        wanted.append(("127.0.0.1", s.kms_port, "embedded KMS", "--kms-port / kms.port"))
    taken: list[str] = []
    seen: dict[int, str] = {}
    for host, port, what, setting in wanted:
        if port in seen:
            taken.append(f"{port} ({what}, {setting}) is also the {seen[port]} port")
            continue
        seen[port] = what
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                taken.append(f"{host}:{port} ({what}, {setting}): {exc.strerror}")
    if taken:
        raise ConfigError(
            f"cannot listen on {len(taken)} port(s): {'; '.join(taken)} (is another "
            "trustserve running? choose other ports with the settings named)"
        )
