"""The whole serving stack in one process: broker, worker supervisor and the three HTTP ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from trustserve.attestation import make_provider
from trustserve.broker import Broker, open_broker
from trustserve.broker.encrypted import EncryptingBroker
from trustserve.config import Settings
from trustserve.encoding import b64
from trustserve.files import read_or_create_token
from trustserve.frontend.inference import InferenceApi
from trustserve.frontend.keys import FrontendKeys
from trustserve.frontend.management import ManagementApi
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.kms.app import create_app
from trustserve.kms.client import KmsClient
from trustserve.kms.embedded import development_kms
from trustserve.kms.service import KmsService
from trustserve.kms.trust import KmsTrust
from trustserve.supervisor import WorkerSupervisor
from trustserve.tls import TlsFiles, ensure_local_ca

log = logging.getLogger("trustserve")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the stack (three servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Stack:
    def __init__(self, settings: Settings, kms: KmsService | None = None) -> None:
        self.settings = settings
        self.kms = kms
        self.metrics = Metrics()
        self.registry = ModelRegistry(settings.store)
        self.broker: Broker
        self.supervisor = WorkerSupervisor(
            [
                "--engine",
                settings.engine,
                "--threads",
                str(settings.engine_threads),
                "--home",
                str(settings.home),
            ]
        )
        self.tls: TlsFiles | None = None
        self._servers: list[_Server] = []

    def _server(self, app: ASGIApp, host: str, port: int, tls: TlsFiles | None) -> _Server:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http="httptools",
            loop="none",
            access_log=False,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=10,
            backlog=2048,
        )
        return _Server(config)

    async def run(self) -> None:
        s = self.settings
        tls_files = ensure_local_ca(s.tls_dir)
        if s.tls:
            self.tls = tls_files
        else:
            log.warning(
                "!!! TLS is OFF (--insecure-http): clients' data crosses the network in clear"
            )
        token = read_or_create_token(s.token_file)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        tasks = []
        keys = None
        kms_server: _Server | None = None
        kms_task: asyncio.Task[None] | None = None
        kms_url = s.kms_url
        trust = KmsTrust.from_options(s.kms_identity, s.kms_policy)
        trust_args: list[str] = []
        for flag, value in (("--kms-identity", s.kms_identity), ("--kms-policy", s.kms_policy)):
            trust_args += [flag, value] if value else []
        if kms_url is None and (s.dev or self.kms is not None):
            service = self.kms or development_kms(s.home)
            # the stack made this KMS: it knows the identity and hands it to its own parts
            identity = service.state.identity_key().public_key().public_bytes_raw()
            trust, trust_args = KmsTrust(identity), ["--kms-identity", b64(identity)]
            provider = make_provider(s.attestation, s.home)
            kms_server = self._server(
                create_app(service, provider), "127.0.0.1", s.kms_port, tls_files
            )
            kms_task = asyncio.create_task(kms_server.serve())
            while not kms_server.started:
                if kms_task.done():
                    await kms_task
                await asyncio.sleep(0.02)
            kms_url = f"https://127.0.0.1:{s.kms_port}"
        broker, worker_url = await open_broker(
            s.broker_url, s.run_dir / "broker.sock", s.max_queue, s.max_deliveries
        )
        self.broker = broker
        if kms_url is not None:
            client = KmsClient(kms_url, ca_file=tls_files.ca, trust=trust)
            keys = FrontendKeys(client, make_provider(s.attestation, s.home))
            self.broker = EncryptingBroker(broker, await keys.broker_key())
            self.supervisor.worker_args += ["--kms", kms_url, "--attestation", s.attestation]
            self.supervisor.worker_args += [*trust_args, "--key-refresh", str(s.key_refresh_s)]
        else:
            log.warning("!!! no key service: broker payloads are NOT encrypted (plaintext mode)")
        self.supervisor.worker_args += ["--broker", worker_url]
        for entry in self.registry.scan(s.workers_per_model):
            await self.supervisor.scale(entry, entry.min_workers)
        inference = InferenceApi(
            self.registry,
            self.broker,
            self.metrics,
            timeout_s=s.request_timeout_s,
            max_body_bytes=s.max_body_bytes,
            keys=keys,
        )
        management = ManagementApi(self.registry, self.broker, self.supervisor, s.workers_per_model)
        metrics_app = Starlette(routes=[Route("/metrics", self.metrics_endpoint)])
        servers = [
            self._server(inference.app(), s.host, s.inference_port, self.tls),
            self._server(management.app(token), s.management_host, s.management_port, self.tls),
            self._server(metrics_app, s.management_host, s.metrics_port, self.tls),
        ]
        self._servers += servers
        tasks += [asyncio.create_task(srv.serve()) for srv in servers]
        try:
            await asyncio.gather(*tasks)
        finally:
            # front doors first, then the workers, then the key service they talk to
            await self.supervisor.stop_all()
            await self.broker.close()
            if keys is not None:
                keys.client.close()
            if kms_server is not None and kms_task is not None:
                kms_server.should_exit = True
                await kms_task

    async def metrics_endpoint(self, request: Request) -> Response:
        for entry in self.registry.entries():
            self.metrics.workers.labels(entry.manifest.name).set(
                len(self.supervisor.workers(entry.queue))
            )
        return await self.metrics.endpoint(request)

    def stop(self) -> None:
        for srv in self._servers:
            srv.should_exit = True


def banner(settings: Settings, models: list[str]) -> str:
    s = settings
    base = f"{s.scheme}://localhost:{s.inference_port}"
    ca = f" --cacert {s.tls_dir / 'ca.pem'}" if s.tls else ""
    token = Path(s.token_file)
    lines = []
    if s.dev and s.attestation == "sim":
        lines += [
            "!" * 78,
            "!! DEVELOPMENT MODE: attestation is SIMULATED and the KMS root key sits on this disk.",
            "!! NOTHING here is hardware-protected. Do not serve real data this way.",
            "!" * 78,
        ]
    lines += [
        "trustserve is up",
        f"  inference   {base}  (Open Inference Protocol v2, TorchServe /predictions)",
        f"  management  {s.scheme}://{s.management_host}:{s.management_port}"
        f"  (bearer token in {token})",
        f"  metrics     {s.scheme}://{s.management_host}:{s.metrics_port}/metrics",
        f"  models      {', '.join(models) or '(none)'}",
        "try:",
        f"  curl{ca} {base}/v2/models/digits",
        f"  curl{ca} -X POST {base}/predictions/digits -H 'Content-Type: application/json' "
        "-d '[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,"
        "0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]'",
        "  # sealed end to end (verifies the attestation first; sim accepted only when asked):",
        f"  trustserve predict {base} resnet50 IMAGE.jpg"
        + (" --allow-simulated" if s.dev and s.attestation == "sim" else ""),
    ]
    return "\n".join(lines)
