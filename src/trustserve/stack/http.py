"""The stack's HTTP servers: uvicorn, with the stack's signals, TLS and peer addresses."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from trustserve.errors import ConfigError
from trustserve.tls import TlsFiles


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the stack (several servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(
    app: ASGIApp,
    host: str,
    port: int,
    tls: TlsFiles | None,
    trusted_proxies: tuple[str, ...] = (),
) -> Server:
    """A server whose requests come from their TCP peer: a forwarded header is believed
    only from ``trusted_proxies`` (uvicorn's own default believes 127.0.0.1's, so a
    client on loopback could name any address it likes)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="none",
        access_log=False,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
        backlog=2048,
    )
    return Server(config)


def trusted_proxies(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``listen.trusted_proxies`` checked: each an address or a CIDR network."""
    for value in values:
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"listen.trusted_proxies / --trusted-proxy: {exc} (give addresses or CIDR "
                "networks of the proxies whose X-Forwarded-For is believed)"
            ) from None
    return tuple(v.strip() for v in values)
