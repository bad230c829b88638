"""TorchServe's ``config.properties`` in trustserve's terms, and why the rest has none.

``read_properties`` parses the file as Java does (``javaproperties``: ``=``, ``:`` or
space separators, ``\\`` continuation lines and escapes, ``#``/``!`` comments).
``translate`` sorts every key into one of three places:

* a ``trustserve.yaml`` setting (``Translation.settings``, dotted keys as in
  ``stack.configfile``): addresses, worker count, deadline, queue and body limits, TLS;
* a model's manifest (``Translation.models``): TorchServe batches per model and so does
  trustserve, in each archive's authenticated manifest (``max_batch_size``,
  ``max_batch_delay_ms``, ``extra.default_version``);
* ignored, with the reason (``Translation.entries`` with no target).

Values are never copied into the report (``keystore_pass`` is a secret). A value that
cannot mean what its key says is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trustserve.archive import MAX_BATCH_SIZE
from trustserve.errors import ConfigError
from trustserve.models.torchserve_keys import IGNORED, MODEL_IGNORED

MAX_DELAY_MS = 10000  # as the manifest allows
MAX_WORKERS = 64  # as the management API allows


@dataclass(frozen=True)
class ModelSettings:
    """What the ``models=`` JSON (or the top-level defaults) says about one model version."""

    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    default_version: bool | None = None
    mar_name: str | None = None
    workers: int | None = None  # minWorkers: trustserve.yaml's worker.models


@dataclass(frozen=True)
class Entry:
    """One key of the file: the trustserve settings it became (none: ignored) and why."""

    key: str
    to: tuple[str, ...]
    why: str = ""

    @property
    def ignored(self) -> bool:
        return not self.to


@dataclass
class Translation:
    settings: dict[str, Any] = field(default_factory=dict)
    models: dict[tuple[str, str], ModelSettings] = field(default_factory=dict)
    defaults: ModelSettings = ModelSettings()  # top-level batch_size / max_batch_delay
    load: tuple[str, ...] | None = None  # load_models' archives; None: every one
    model_store: str | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def ignored(self) -> list[Entry]:
        return [e for e in self.entries if e.ignored]

    def for_model(self, mar_file: str, name: str, version: str) -> ModelSettings:
        """The settings of the archive ``mar_file`` holding ``name`` ``version``."""
        for (n, v), s in self.models.items():
            if s.mar_name == mar_file or (s.mar_name is None and (n, v) == (name, version)):
                return _merge(s, self.defaults)
        return self.defaults

    def note(self, key: str, *to: str, why: str = "") -> None:
        self.entries.append(Entry(key, to, why))


def read_properties(path: Path) -> dict[str, str]:
    try:
        import javaproperties
    except ImportError:  # pragma: no cover - the torch extra has it
        raise ConfigError(
            "reading config.properties needs javaproperties: pip install 'trustserve[torch]'"
        ) from None
    try:
        with path.open(encoding="latin-1") as f:  # java.util.Properties' encoding
            return dict(javaproperties.load(f))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # a bad \\u escape
        raise ConfigError(f"{path} is not a Java properties file: {exc}") from None


def translate(props: Mapping[str, str]) -> Translation:
    t = Translation()
    # so that the report reads in the file's order, each key is handled where it stands
    for key, value in props.items():
        handler = _HANDLERS.get(key)
        if handler is not None:
            handler(t, key, value.strip())
        elif key in IGNORED:
            t.note(key, why=IGNORED[key])
        else:
            t.note(key, why="not a TorchServe setting trustserve knows")
    if "min_workers" in props and any(
        e.key == "default_workers_per_model" and e.to for e in t.entries
    ):
        _drop(t, "min_workers", "default_workers_per_model sets worker.per_model")
        t.settings["worker.per_model"] = _workers(props["default_workers_per_model"])
    return t


def _drop(t: Translation, key: str, why: str) -> None:
    t.entries = [e if e.key != key else Entry(key, (), why) for e in t.entries]


def _address(
    t: Translation, key: str, value: str, host_key: str | None, port_key: str, why: str = ""
) -> None:
    if value.startswith("unix:"):
        t.note(key, why="unix-socket addresses are not supported: give a host and port")
        return
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(f"config.properties: {key}: expected http(s)://HOST:PORT, got {value!r}")
    port = port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "http":
        why = why or "served over HTTPS: tls.cert, else the local CA's certificate"
    if host_key is not None:
        t.settings[host_key] = parts.hostname
        t.note(key, host_key, port_key, why=why)
    else:
        t.note(key, port_key, why=why)
    t.settings[port_key] = port


def _inference(t: Translation, key: str, value: str) -> None:
    _address(t, key, value, "listen.host", "listen.port")


def _management(t: Translation, key: str, value: str) -> None:
    _address(t, key, value, "listen.management_host", "listen.management_port")


def _metrics(t: Translation, key: str, value: str) -> None:
    why = "served on listen.management_host, over HTTPS"
    _address(t, key, value, None, "listen.metrics_port", why)


def _grpc(t: Translation, key: str, value: str) -> None:
    t.settings["listen.grpc_port"] = _int(key, value, 1, 65535)
    t.note(key, "listen.grpc_port", why="on listen.host, with the same TLS as HTTPS")


def _workers(value: str, key: str = "default_workers_per_model") -> int:
    return _int(key, value, 0, MAX_WORKERS)


def _default_workers(t: Translation, key: str, value: str) -> None:
    n = _workers(value, key)
    if n == 0:  # TorchServe's "as many as there are GPUs, else cores"
        t.note(key, why="0 means TorchServe's automatic count: trustserve's default, one per core")
        return
    t.settings["worker.per_model"] = n
    t.note(key, "worker.per_model")


def _min_workers(t: Translation, key: str, value: str) -> None:
    n = _workers(value, key)
    if n == 0:
        t.note(key, why="0 workers would serve nothing; trustserve's default applies")
        return
    t.settings.setdefault("worker.per_model", n)
    t.note(key, "worker.per_model")


def _timeout(t: Translation, key: str, value: str) -> None:
    t.settings["limits.timeout_s"] = float(_int(key, value, 1, 10**6))
    t.note(key, "limits.timeout_s")


def _queue(t: Translation, key: str, value: str) -> None:
    t.settings["limits.max_queue"] = _int(key, value, 1, 10**7)
    t.note(key, "limits.max_queue")


def _request_size(t: Translation, key: str, value: str) -> None:
    size = _int(key, value, 1, 1 << 40)
    t.settings["limits.max_body_mb"] = max(1, math.ceil(size / (1024 * 1024)))
    t.note(key, "limits.max_body_mb", why="in whole MiB, rounded up")


def _pem(target: str) -> Any:
    def handle(t: Translation, key: str, value: str) -> None:
        if not value:
            raise ConfigError(f"config.properties: {key}: expected a file path, got nothing")
        t.settings[target] = value
        t.note(key, target)

    return handle


def _store(t: Translation, key: str, value: str) -> None:
    t.model_store = value
    t.note(key, "model_store", why="the store imported from (unless given on the command line)")


def _load_models(t: Translation, key: str, value: str) -> None:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"config.properties: {key}: expected 'all' or a list of archives")
    if any(n.lower() == "all" for n in names):
        t.note(key, why="'all': every archive in the store is imported")
        return
    files = []
    for n in names:
        file = n.split("=", 1)[1] if "=" in n else n
        if "://" in file or "/" in file:
            raise ConfigError(
                f"config.properties: {key}: {n!r} is not an archive in the store "
                "(archives are never downloaded)"
            )
        files.append(file if file.endswith(".mar") else file + ".mar")
    t.load = tuple(files)
    t.note(key, "model_store", why="only these archives are imported")


def _batch_size(t: Translation, key: str, value: str) -> None:
    t.defaults = _merge(ModelSettings(batch_size=_int(key, value, 1, MAX_BATCH_SIZE)), t.defaults)
    t.note(key, "manifest max_batch_size", why="of every imported model without its own")


def _batch_delay(t: Translation, key: str, value: str) -> None:
    delay = float(_int(key, value, 0, MAX_DELAY_MS))
    t.defaults = _merge(ModelSettings(max_batch_delay_ms=delay), t.defaults)
    t.note(key, "manifest max_batch_delay_ms", why="of every imported model without its own")


def _models(t: Translation, key: str, value: str) -> None:
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config.properties: {key}: not JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config.properties: {key}: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config.properties: {key}: expected {{model: {{version: {{...}}}}}}")
    for name, versions in raw.items():
        if not isinstance(versions, dict):
            raise ConfigError(f"config.properties: {key}: {name}: expected {{version: {{...}}}}")
        for version, conf in versions.items():
            where = f"{key}.{name}.{version}"
            if not isinstance(conf, dict):
                raise ConfigError(f"config.properties: {where}: expected an object of settings")
            t.models[(name, str(version))] = _model(t, where, conf)


def _model(t: Translation, where: str, conf: dict[str, Any]) -> ModelSettings:
    s: dict[str, Any] = {}
    for k, v in conf.items():
        at = f"{where}.{k}"
        if k == "marName":
            if not isinstance(v, str) or not v.endswith(".mar") or "/" in v:
                raise ConfigError(f"config.properties: {at}: expected an archive name, got {v!r}")
            s["mar_name"] = v
            t.note(at, "model_store", why="the archive these settings apply to")
        elif k == "batchSize":
            s["batch_size"] = _int(at, v, 1, MAX_BATCH_SIZE)
            t.note(at, "manifest max_batch_size")
        elif k == "maxBatchDelay":
            s["max_batch_delay_ms"] = float(_int(at, v, 0, MAX_DELAY_MS))
            t.note(at, "manifest max_batch_delay_ms")
        elif k == "minWorkers":
            s["workers"] = _int(at, v, 0, MAX_WORKERS)
            t.note(at, "worker.models", why="this model version's worker count")
        elif k == "defaultVersion":
            if not isinstance(v, bool):
                raise ConfigError(f"config.properties: {at}: expected true or false, got {v!r}")
            s["default_version"] = v
            t.note(at, "manifest extra.default_version")
        elif k in MODEL_IGNORED:
            t.note(at, why=MODEL_IGNORED[k])
        else:
            t.note(at, why="not a per-model setting trustserve knows")
    return ModelSettings(**s)


def _merge(first: ModelSettings, then: ModelSettings) -> ModelSettings:
    return ModelSettings(
        batch_size=first.batch_size if first.batch_size is not None else then.batch_size,
        max_batch_delay_ms=first.max_batch_delay_ms
        if first.max_batch_delay_ms is not None
        else then.max_batch_delay_ms,
        default_version=first.default_version
        if first.default_version is not None
        else then.default_version,
        mar_name=first.mar_name or then.mar_name,
        workers=first.workers if first.workers is not None else then.workers,
    )


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    else:
        try:
            n = int(str(value).strip())
        except ValueError:
            n = None
    if n is None or not lo <= n <= hi:
        raise ConfigError(
            f"config.properties: {key}: expected an integer from {lo} to {hi}, got {value!r}"
        )
    return n


_HANDLERS = {
    "inference_address": _inference,
    "management_address": _management,
    "metrics_address": _metrics,
    "grpc_inference_port": _grpc,
    "default_workers_per_model": _default_workers,
    "min_workers": _min_workers,
    "default_response_timeout": _timeout,
    "job_queue_size": _queue,
    "max_request_size": _request_size,
    "certificate_file": _pem("tls.cert"),
    "private_key_file": _pem("tls.key"),
    "model_store": _store,
    "load_models": _load_models,
    "batch_size": _batch_size,
    "max_batch_delay": _batch_delay,
    "models": _models,
}
