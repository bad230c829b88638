"""Where the Redis broker is and how to reach it, from a URL and files.

    rediss://USER@HOST:PORT/DB?ca=CA.pem&cert=CLIENT.pem&key=CLIENT-KEY.pem
        &password_file=PW&visibility_s=10&prefix=trustserve
    rediss+sentinel://USER@S1:PORT,S2:PORT,S3:PORT/SERVICE[/DB]?...the same...

The second form asks the Sentinels where the primary is, and asks again after a
failover (``trustserve redis config --replica ... --sentinel ...`` writes such a set);
the same user, password and certificates serve the Sentinels and the servers.

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
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedSSLConnection
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
    sentinels: tuple[tuple[str, int], ...] = ()  # with ``service``: ask these for the primary
    service: str = ""

    @property
    def where(self) -> str:
        """For messages: no user, no password, no files."""
        scheme = "rediss" if self.tls else "redis"
        if self.sentinels:
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"{scheme}+sentinel://{where}/{self.service}/{self.db}"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"

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


def _tls_connection(
    ctx: ssl.SSLContext, base: type[SSLConnection] = SSLConnection
) -> type[SSLConnection]:
    class TlsConnection(base):  # type: ignore[valid-type,misc]
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
    scheme, _, variant = parts.scheme.partition("+")
    if scheme not in ("redis", "rediss") or variant not in ("", "sentinel"):
        raise ConfigError(
            "broker URL must start with rediss:// or rediss+sentinel:// (or redis[+sentinel]://),"
            f" not {parts.scheme}"
        )
    userinfo, _, netloc = parts.netloc.rpartition("@")
    if ":" in userinfo:
        raise ConfigError(
            "broker URL must not contain a password (it would show on the command line and in "
            f"logs): put it in a file and add ?password_file=PATH or set ${PASSWORD_ENV}"
        )
    path = [p for p in parts.path.split("/") if p]
    sentinels: tuple[tuple[str, int], ...] = ()
    service = ""
    if variant:
        sentinels = tuple(_host_port(item, 26379) for item in netloc.split(","))
        if not path:
            raise ConfigError("broker URL: rediss+sentinel://HOSTS/SERVICE needs the service name")
        service, path = path[0], path[1:]
        host, port = sentinels[0]
    else:
        host, port = _host_port(netloc, 6379)
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise ConfigError(f"broker URL: the database must be a number, not {'/'.join(path)!r}")
    params = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ConfigError(
            f"broker URL: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_PARAMS))}"
        )
    tls = scheme == "rediss"
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
        host=host,
        port=port,
        db=int(path[0]) if path else 0,
        username=unquote(userinfo) if userinfo else None,
        password=password,
        tls=tls,
        ca=ca,
        cert=cert,
        key=key,
        visibility_s=visibility,
        prefix=prefix,
        sentinels=sentinels,
        service=service,
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


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[V6]:PORT`` for IPv6) from a URL's host part."""
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"broker URL: bad host or port {text!r} ({exc})") from None
    if not host:
        raise ConfigError("broker URL has no host")
    return host, port


def open_client(config: RedisConfig, max_connections: int = 32) -> Redis:
    """A client whose commands fail fast while Redis is away, and which reconnects.

    A bounded pool (callers wait for a free connection instead of opening hundreds of
    TLS connections at once); short timeouts and one immediate retry, so that a
    connection broken by a Redis restart is replaced once, and anything else becomes
    a 503 at once instead of holding the client. With Sentinels, each new connection
    asks them where the primary is (``FollowingPool``).
    """
    kw: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": 2,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,  # a TLS handshake on a loaded host; refusals fail at once
        "retry": Retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,)),
    }
    if not config.sentinels:
        return Redis.from_pool(BlockingConnectionPool(**kw, **config.client_kwargs()))
    ask: dict[str, Any] = {"username": config.username, "password": config.password}
    ask |= {"socket_timeout": 2, "socket_connect_timeout": 2}
    if config.tls:
        ask |= {"ssl": True, "ssl_ca_certs": str(config.ca) if config.ca else None}
        ask |= {"ssl_certfile": config.cert and str(config.cert)}
        ask |= {"ssl_keyfile": config.key and str(config.key)}
        kw["connection_class"] = _tls_connection(config.tls_context(), SentinelManagedSSLConnection)
    sentinel = Sentinel(config.sentinels, sentinel_kwargs=ask)
    return sentinel.master_for(  # type: ignore[no-any-return]
        config.service,
        connection_pool_class=FollowingPool,
        db=config.db,
        username=config.username,
        password=config.password,
        **kw,
    )


class FollowingPool(SentinelConnectionPool, BlockingConnectionPool):
    """The primary's connections, bounded like ``BlockingConnectionPool``; ``moves``
    counts the times Sentinels named a new primary (a failover), so that the broker can
    put in again what the old one may have lost (``RedisStreamsBroker``)."""

    moves = 0

    async def get_master_address(self) -> tuple[str, int]:
        before = self.master_address
        address: tuple[str, int] = await super().get_master_address()  # type: ignore[no-untyped-call]
        if before is not None and address != before:
            self.moves += 1
            log.warning("Redis failover: the primary is now %s:%s", *address)
        return address


def failovers(client: Redis) -> int:
    """How many failovers ``client`` has followed (0 without Sentinels)."""
    return getattr(client.connection_pool, "moves", 0)


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
