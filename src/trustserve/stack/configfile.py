"""``trustserve.yaml``: one configuration file for ``up``, ``serve`` and ``worker``.

Every setting has one name in the file (``listen.port``), one environment variable
(``TRUSTSERVE_LISTEN_PORT``) and, for the common ones, a command-line flag. Which
wins is decided here and nowhere else: a flag given > ``TRUSTSERVE_*`` > the file >
the default (the defaults live in ``Settings`` and ``WorkerOptions``). The file is
``--config FILE``, else ``$TRUSTSERVE_CONFIG``, else ``HOME/trustserve.yaml`` when it
exists. Unknown keys and values of the wrong type are errors naming the key.

Example::

    listen: {host: 0.0.0.0, port: 8080}
    tls: {cert: /etc/trustserve/server.pem, key: /etc/trustserve/server-key.pem}
    kms: {url: "https://kms.internal:8443", ca: /etc/trustserve/kms-ca.pem,
          identity: /etc/trustserve/kms-identity.pub}
    broker: {url: "rediss://frontend@redis.internal:6380/0?ca=..."}
    attestation: {provider: tpm, options: {tcti: "device:/dev/tpmrm0", pcrs: "0,1,2,3,4,5,6,7"}}
    worker: {engine: onnxruntime, threads: 1, per_model: 2}
    limits: {timeout_s: 30, max_queue: 1024, max_body_mb: 64}
    readiness: {require: [digits, resnet50]}
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustserve.errors import ConfigError

CONFIG_ENV = "TRUSTSERVE_CONFIG"
FILE_NAME = "trustserve.yaml"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("expected true or false")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected an integer")
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    return float(value)


def _str(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def _path(value: Any) -> Path:
    return Path(_str(value)).expanduser()


def _names(value: Any) -> tuple[str, ...]:
    """A list of names in the file, ``a,b`` in the environment."""
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, list | tuple):
        return tuple(_str(v) for v in value)
    raise ValueError("expected a list of names")


def _pairs(value: Any) -> tuple[str, ...]:
    """Provider options: a mapping in the file, ``K=V,K=V`` in the environment."""
    if isinstance(value, Mapping):
        return tuple(f"{k}={_str(v)}" for k, v in value.items())
    if isinstance(value, str):
        return tuple(p for p in value.split(";") if p)
    if isinstance(value, list | tuple):
        return tuple(_str(v) for v in value)
    raise ValueError("expected a mapping of option: value")


@dataclass(frozen=True)
class Key:
    name: str  # dotted, in the file
    dest: str  # the argparse destination (and flag) that sets it
    parse: Callable[[Any], Any]

    @property
    def env(self) -> str:
        return "TRUSTSERVE_" + self.name.upper().replace(".", "_")


KEYS = (
    Key("home", "home", _path),
    Key("model_store", "model_store", _path),
    Key("listen.host", "host", _str),
    Key("listen.port", "port", _int),
    Key("listen.management_host", "management_host", _str),
    Key("listen.management_port", "management_port", _int),
    Key("listen.metrics_port", "metrics_port", _int),
    Key("listen.grpc_port", "grpc_port", _int),
    Key("tls.insecure_http", "insecure_http", _bool),
    Key("tls.cert", "tls_cert", _path),
    Key("tls.key", "tls_key", _path),
    Key("kms.url", "kms", _str),
    Key("kms.ca", "kms_ca", _path),
    Key("kms.port", "kms_port", _int),
    Key("kms.identity", "kms_identity", _str),
    Key("kms.policy", "kms_policy", _path),
    Key("broker.url", "broker", _str),
    Key("attestation.provider", "attestation", _str),
    Key("attestation.options", "attestation_options", _pairs),
    Key("worker.engine", "engine", _str),
    Key("worker.threads", "threads", _int),
    Key("worker.per_model", "workers", _int),
    Key("worker.replay_window", "replay_window", _float),
    Key("worker.key_refresh", "key_refresh", _float),
    Key("limits.timeout_s", "timeout", _float),
    Key("limits.max_queue", "max_queue", _int),
    Key("limits.max_body_mb", "max_body_mb", _int),
    Key("readiness.require", "readiness_require", _names),
    Key("dev", "dev", _bool),
)
BY_NAME = {k.name: k for k in KEYS}


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if key in BY_NAME:
            flat[key] = value
        elif isinstance(value, Mapping) and any(k.startswith(key + ".") for k in BY_NAME):
            flat.update(_flatten(value, key + "."))
        else:
            raise ConfigError(f"unknown setting '{key}' (known: {', '.join(sorted(BY_NAME))})")
    return flat


def read_file(path: Path) -> dict[str, Any]:
    """The settings in ``path``, flattened to dotted names and type-checked."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return {name: _parse(BY_NAME[name], value, str(path)) for name, value in _flatten(raw).items()}


def _parse(key: Key, value: Any, where: str) -> Any:
    try:
        return key.parse(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: setting '{key.name}': {exc}, got {value!r}") from None


@dataclass(frozen=True)
class Resolved:
    """Effective values by argparse destination, and where each came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    file: Path | None


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Resolved:
    """Merges flags (``args``: None = not given), the environment and the file.

    Settings no layer gives are left out: their defaults apply.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def layer(found: Mapping[str, Any], source: str) -> None:
        for name, value in found.items():
            dest = BY_NAME[name].dest
            if dest not in values:
                values[dest], sources[dest] = value, source

    given = {k.name: getattr(args, k.dest) for k in KEYS if getattr(args, k.dest, None) is not None}
    layer(given, "flag")
    layer({k.name: _parse(k, env[k.env], k.env) for k in KEYS if env.get(k.env)}, "environment")
    file = _config_file(args, env, values.get("home"))
    if file is not None:
        layer(read_file(file), str(file))
    return Resolved(values, sources, file)


def _config_file(
    args: argparse.Namespace, env: Mapping[str, str], home: Path | None
) -> Path | None:
    given = getattr(args, "config", None) or env.get(CONFIG_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        return path
    from trustserve.files import default_home

    implicit = (home or default_home()) / FILE_NAME
    return implicit if implicit.is_file() else None


def apply(args: argparse.Namespace, resolved: Resolved) -> argparse.Namespace:
    """``args`` with every resolved setting filled in (what the commands read)."""
    merged = argparse.Namespace(**vars(args))
    for dest, value in resolved.values.items():
        setattr(merged, dest, value)
    return merged
