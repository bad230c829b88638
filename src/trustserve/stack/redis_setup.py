"""``trustserve redis config DIR --host NAME``: a ready Redis for the broker, and its URLs.

Writes into DIR:

* ``tls/``: a CA, the server certificate (for NAME and the bind addresses) and one
  client certificate per role (Redis runs with ``tls-auth-clients yes``);
* ``frontend.password``, ``worker.password``: one random ACL password per role (0600);
  redis.conf holds only their SHA-256;
* ``redis.conf``: TLS only (no plain port), append-only file, and one ACL user per role
  with the least rights that role needs (docs/redis.md), on the broker's keys only.

The broker URLs it prints name the files, never a password. The CA private key
stays in DIR: keep DIR on the Redis host and copy to each frontend or worker host
only ``tls/ca.pem``, that role's certificate, key and password file.
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from trustserve.errors import ConfigError
from trustserve.files import write_secret
from trustserve.stack.redis_ha import (
    SERVICE,
    HaSetup,
    password_hash,
    write_ha_files,
    write_server_conf,
)
from trustserve.tls import TlsFiles, issue_client_cert, issue_local_ca

PREFIX = "trustserve"
_COMMON = "resetchannels -@all +@connection +ping +time +multi +exec +discard +@scripting"
# What each role runs, on which keys (P = prefix; see the key table in docs/redis.md).
ROLE_RIGHTS = {
    # submit jobs (XADD + a Lua length check, one MULTI), read its result stream, count
    # live workers, answer (dead-letter) jobs every worker died on; keep async job records
    "frontend": "~{p}:q:* ~{p}:r:* ~{p}:c:* ~{p}:dead:* ~{p}:job:* "
    + _COMMON
    + " +@stream +zcount +expire +del +set +get +wait",
    # take, renew, answer and dead-letter jobs; heartbeats; the shared sealed-nonce store
    "worker": "~{p}:q:* ~{p}:r:* ~{p}:c:* ~{p}:dead:* ~{p}:nonce:* "
    + _COMMON
    + " +@stream +@sortedset +expire +del +set",
}


@dataclass(frozen=True)
class RedisSetup:
    directory: Path
    host: str
    port: int
    tls: TlsFiles
    conf: Path
    ha: HaSetup | None = None

    def url(self, role: str) -> str:
        query = {
            "ca": str(self.tls.ca),
            "cert": str(self.directory / "tls" / f"{role}.pem"),
            "key": str(self.directory / "tls" / f"{role}-key.pem"),
            "password_file": str(self.directory / f"{role}.password"),
        }
        if self.ha is not None:
            where = ",".join(f"{h}:{p}" for h, p in self.ha.sentinels)
            return f"rediss+sentinel://{role}@{where}/{SERVICE}?{urlencode(query)}"
        return f"rediss://{role}@{self.host}:{self.port}/0?{urlencode(query)}"


def write_redis_setup(
    directory: Path,
    host: str,
    *,
    port: int = 6380,
    bind: tuple[str, ...] = ("0.0.0.0",),
    prefix: str = PREFIX,
    appendfsync: str = "always",
    replica: tuple[str, int] | None = None,
    sentinels: tuple[tuple[str, int], ...] = (),
    down_after_ms: int = 5000,
) -> RedisSetup:
    """The Redis files in ``directory``; with ``replica`` and ``sentinels`` (issue them
    together) also a replica's and each Sentinel's (``trustserve.stack.redis_ha``)."""
    if (replica is None) != (not sentinels):
        raise ConfigError("a replica and Sentinels go together: give both or neither")
    directory = directory.resolve()
    names = [host, "localhost", "127.0.0.1", *bind]
    names += [h for h, _ in ([replica] if replica else []) + list(sentinels)]
    tls = issue_local_ca(directory / "tls", [n for n in dict.fromkeys(names) if n != "0.0.0.0"])
    users = []
    hashes: dict[str, str] = {}
    for role, rights in ROLE_RIGHTS.items():
        issue_client_cert(tls, directory / "tls", role)
        password = secrets.token_urlsafe(32)
        write_secret(directory / f"{role}.password", password.encode())
        hashes[role] = password_hash(password)
        users.append(f"user {role} on #{hashes[role]} {rights.format(p=prefix)}")
    union = " ".join(dict.fromkeys(" ".join(ROLE_RIGHTS.values()).format(p=prefix).split()))
    conf = [
        f"bind {' '.join(bind)}",
        "port 0",
        f"tls-cert-file {tls.cert}",
        f"tls-key-file {tls.key}",
        f"tls-ca-cert-file {tls.ca}",
        "tls-auth-clients yes",
        "appendonly yes",
        f"appendfsync {appendfsync}",
        "rdbcompression no",  # payloads are ciphertext: LZF in AOF rewrites only costs CPU
        "auto-aof-rewrite-min-size 512mb",  # 64 MB is ~100 images: a rewrite a second
        'save ""',
        "maxmemory-policy noeviction",
        # Not "user default off": Redis 7.0 (Debian 12) replays MULTI/EXEC from the AOF as the
        # default user and drops what that user may not run (redis/redis#14541), so `default`
        # gets the broker's rights and a password nobody is told.
        f"user default on #{password_hash(secrets.token_urlsafe(32))} {union}",
        *users,
    ]
    ha = None
    if replica is not None:
        ha = write_ha_files(
            directory, tls, conf, (host, port), replica, sentinels, hashes, down_after_ms
        )
        conf = [*conf, *ha.server_lines]
    path = directory / "redis.conf"
    write_server_conf(path, conf, directory / "data", port)
    return RedisSetup(directory, host, port, tls, path, ha)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


def _config(args: argparse.Namespace) -> int:
    setup = write_redis_setup(
        Path(args.directory),
        args.host,
        port=args.port,
        bind=tuple(args.bind or ["0.0.0.0"]),
        replica=args.replica,
        sentinels=tuple(args.sentinel or ()),
        down_after_ms=args.down_after_ms,
    )
    print(f"wrote {setup.conf} (TLS on port {setup.port}, ACL users 'frontend' and 'worker')")
    print(f"start Redis:   redis-server {setup.conf}")
    if setup.ha is not None:
        print(f"the replica:   redis-server {setup.ha.replica_conf}")
        for conf in setup.ha.sentinel_confs:
            print(f"a Sentinel:    redis-server {conf} --sentinel")
    print(f"frontends:     --broker '{setup.url('frontend')}'")
    print(f"workers:       --broker '{setup.url('worker')}'")
    print(
        "copy to each frontend/worker host only tls/ca.pem and that role's tls/ROLE.pem, "
        "tls/ROLE-key.pem and ROLE.password (the paths in its URL); tls/ca-key.pem never leaves"
    )
    return 0


def register(sub: Any) -> None:
    redis = sub.add_parser("redis", help="Redis for scale-out")
    actions = redis.add_subparsers(dest="redis_command", required=True, metavar="ACTION")
    p = actions.add_parser("config", help="write redis.conf, certificates and passwords")
    p.add_argument("directory", help="where to write (keep it on the Redis host)")
    p.add_argument("--host", required=True, help="the name frontends and workers reach Redis by")
    p.add_argument("--port", type=int, default=6380, help="TLS port (default 6380)")
    p.add_argument(
        "--bind", action="append", help="address to listen on (repeatable; default 0.0.0.0)"
    )
    p.add_argument(
        "--replica",
        type=_address,
        metavar="HOST:PORT",
        help="also write replica.conf for a replica there (high availability: docs/redis.md)",
    )
    p.add_argument(
        "--sentinel",
        type=_address,
        action="append",
        metavar="HOST:PORT",
        help="a Sentinel there (three or more, with --replica); clients get a "
        "rediss+sentinel:// URL",
    )
    p.add_argument(
        "--down-after-ms",
        type=int,
        default=5000,
        help="how long the primary may not answer before Sentinels fail over (default 5000)",
    )
    p.set_defaults(func=_config)
