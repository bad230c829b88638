"""``trustserve.yaml``: one configuration file for ``up``, ``serve`` and ``worker``.

Every setting has one name in the file (``listen.port``), one environment variable
(``TRUSTSERVE_LISTEN_PORT``) and, for the common ones, a command-line flag, all
declared once with its default in ``Settings`` or ``WorkerOptions``
(``stack.options``; docs/configuration.md lists them). Which wins is decided here and
nowhere else: a flag given > ``TRUSTSERVE_*`` > the file > the default. The file is
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
    limits: {timeout_s: 30, max_queue: 1024, max_body_mb: 64, job_retention_s: 600, max_jobs: 1024}
    readiness: {require: [digits, resnet50]}
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustserve.errors import ConfigError
from trustserve.options import Option
from trustserve.stack.options import stack_options

CONFIG_ENV = "TRUSTSERVE_CONFIG"


# every setting, from its one definition (``Settings`` / ``WorkerOptions`` fields)
KEYS = tuple(stack_options())
BY_NAME = {k.key: k for k in KEYS if k.key}


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


def _parse(key: Option, value: Any, where: str) -> Any:
    try:
        return key.parse(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: setting '{key.key}': {exc}, got {value!r}") from None


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

    flags = {
        n: getattr(args, k.dest)
        for n, k in BY_NAME.items()
        if getattr(args, k.dest, None) is not None
    }
    layer(flags, "flag")
    found = {
        n: _parse(k, env[k.env], k.env) for n, k in BY_NAME.items() if k.env and env.get(k.env)
    }
    layer(found, "environment")
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
    from trustserve.home import config_file, home_or_default

    implicit = config_file(home_or_default(home))
    return implicit if implicit.is_file() else None


def apply(args: argparse.Namespace, resolved: Resolved) -> argparse.Namespace:
    """``args`` with every resolved setting filled in (what the commands read)."""
    merged = argparse.Namespace(**vars(args))
    for dest, value in resolved.values.items():
        setattr(merged, dest, value)
    return merged
