"""Where the Redis broker is and how to reach it, from a URL and files.

    rediss://USER@HOST:PORT/DB?ca=CA.pem&cert=CLIENT.pem&key=CLIENT-KEY.pem
        &password_file=PW&visibility_s=10&prefix=trustserve

The password comes from ``password_file`` or ``$TRUSTSERVE_REDIS_PASSWORD_FILE``,
never from the URL (URLs end up on command lines, in ``ps`` and in logs).
``redis://`` (no TLS) works only with a loud warning.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from trustserve.errors import ConfigError

log = logging.getLogger(__name__)
PASSWORD_ENV = "TRUSTSERVE_REDIS_PASSWORD_FILE"  # noqa: S105 (a variable name)
_PARAMS = {"ca", "cert", "key", "password_file", "visibility_s", "prefix"}


@dataclass(frozen=True)
class RedisConfig:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = True
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    visibility_s: float = 10.0
    prefix: str = "trustserve"

    @property
    def where(self) -> str:
        """For messages: no user, no password, no files."""
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"

    def client_kwargs(self) -> dict[str, Any]:
        """Connection-pool keyword arguments (timeouts set by the caller)."""
        kw: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password,
        }
        if self.tls:
            kw["connection_class"] = _tls_connection(self.tls_context())
        return kw

    def tls_context(self) -> ssl.SSLContext:
        """Verifies the server (certificate and host name) against ``ca`` only, if given.

        One context for all connections: building one per connection (what redis-py
        does) loads the system CA bundle each time and makes bursts of connections slow.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca:
                ctx.load_verify_locations(cafile=str(self.ca))
            else:
                ctx.load_default_certs()
            if self.cert and self.key:
                ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"broker URL: cannot use ca=/cert=/key= ({exc})") from None
        return ctx


def _tls_connection(ctx: ssl.SSLContext) -> type[SSLConnection]:
    class TlsConnection(SSLConnection):
        def _connection_arguments(self) -> Mapping[str, Any]:
            return {**Connection._connection_arguments(self), "ssl": ctx}

    return TlsConnection


def _file(params: dict[str, list[str]], name: str) -> Path | None:
    if name not in params:
        return None
    path = Path(params[name][-1]).expanduser()
    if not path.is_file():
        raise ConfigError(f"broker URL: {name}={path} is not a readable file")
    return path


def read_password(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("Redis password file %s is readable by others: chmod 600 it", path)
    password = path.read_text().strip()
    if not password:
        raise ConfigError(f"Redis password file {path} is empty")
    return password


def parse_redis_url(url: str, env: dict[str, str] | None = None) -> RedisConfig:
    """A ``RedisConfig`` from ``url``; ``ConfigError`` says what is wrong with it."""
    env = dict(os.environ) if env is None else env
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ for an IPv6 host
        raise ConfigError(f"broker URL is not a URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"broker URL must start with rediss:// (or redis://), not {parts.scheme}")
    if parts.password is not None:
        raise ConfigError(
            "broker URL must not contain a password (it would show on the command line and in "
            f"logs): put it in a file and add ?password_file=PATH or set ${PASSWORD_ENV}"
        )
    if not parts.hostname:
        raise ConfigError("broker URL has no host")
    try:
        port = parts.port or 6379
        db = int(parts.path.strip("/") or 0)
    except ValueError as exc:
        raise ConfigError(f"broker URL: bad port or database number ({exc})") from None
    params = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ConfigError(
            f"broker URL: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_PARAMS))}"
        )
    tls = parts.scheme == "rediss"
    ca, cert, key = _file(params, "ca"), _file(params, "cert"), _file(params, "key")
    if (cert is None) != (key is None):
        raise ConfigError("broker URL: a client certificate needs both cert= and key=")
    if not tls and (ca or cert):
        raise ConfigError("broker URL: ca=/cert=/key= need rediss:// (TLS)")
    pw_file = _file(params, "password_file")
    if pw_file is None and env.get(PASSWORD_ENV):
        pw_file = Path(env[PASSWORD_ENV]).expanduser()
        if not pw_file.is_file():
            raise ConfigError(f"${PASSWORD_ENV}={pw_file} is not a readable file")
    password = read_password(pw_file) if pw_file else None
    try:
        visibility = float(params.get("visibility_s", ["10"])[-1])
    except ValueError:
        raise ConfigError("broker URL: visibility_s must be a number of seconds") from None
    if not 0.1 <= visibility <= 3600:
        raise ConfigError("broker URL: visibility_s must be between 0.1 and 3600 seconds")
    prefix = params.get("prefix", ["trustserve"])[-1]
    if not prefix or any(c in prefix for c in " {}"):
        raise ConfigError("broker URL: prefix must be a non-empty name without spaces or braces")
    config = RedisConfig(
        host=parts.hostname,
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=password,
        tls=tls,
        ca=ca,
        cert=cert,
        key=key,
        visibility_s=visibility,
        prefix=prefix,
    )
    if not tls:
        log.warning(
            "!!! the Redis broker at %s is reached WITHOUT TLS: requests, results and the "
            "Redis password cross the network in clear; use rediss://",
            config.where,
        )
    if password is None:
        log.warning("no Redis password configured (password_file= or $%s)", PASSWORD_ENV)
    return config


def open_client(config: RedisConfig, max_connections: int = 32) -> Redis:
    """A client whose commands fail fast while Redis is away, and which reconnects.

    A bounded pool (callers wait for a free connection instead of opening hundreds of
    TLS connections at once); short timeouts and one immediate retry, so that a
    connection broken by a Redis restart is replaced once, and anything else becomes
    a 503 at once instead of holding the client.
    """
    pool = BlockingConnectionPool(
        max_connections=max_connections,
        timeout=2,
        socket_timeout=5,
        socket_connect_timeout=5,  # a TLS handshake on a loaded host; refusals fail at once
        retry=Retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,)),
        **config.client_kwargs(),
    )
    return Redis.from_pool(pool)


async def check_connection(client: Redis, config: RedisConfig) -> None:
    """Refuse wrong credentials or certificates at once; an unreachable Redis only warns."""
    who = f"user {config.username!r}" if config.username else "the default user"
    try:
        await client.ping()
    except rx.AuthenticationError:
        raise ConfigError(
            f"Redis at {config.where} refused {who}: wrong password or unknown ACL user"
        ) from None
    except rx.NoPermissionError:
        raise ConfigError(f"Redis at {config.where}: ACL of {who} does not allow PING") from None
    except (rx.ConnectionError, rx.TimeoutError) as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            raise ConfigError(
                f"TLS to Redis at {config.where}: the server certificate does not verify "
                f"against {config.ca or 'the system CAs'} (check ca= and the host name)"
            ) from None
        # TLS 1.3: a server that wants a client certificate refuses after the handshake,
        # with an alert or by just closing the connection.
        if "CERTIFICATE_REQUIRED" in text or (
            config.tls and config.cert is None and "reset by peer" in text
        ):
            raise ConfigError(
                f"Redis at {config.where} closed the TLS connection: it probably requires a "
                "client certificate (add cert= and key= to the broker URL)"
            ) from None
        if "SSL" in text or "TLS" in text:
            raise ConfigError(f"TLS to Redis at {config.where} failed: {text}") from None
        log.warning("Redis at %s is unreachable (%s); will keep trying", config.where, text)
