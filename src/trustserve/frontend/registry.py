"""Which models this frontend serves: archives in the model store, known by their clear header.

The frontend reads only the public header of an archive; it never needs (and
for an encrypted archive never could read) the model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trustserve import archive
from trustserve.broker.base import queue_name
from trustserve.errors import BadRequest, Conflict, NotFound


@dataclass
class ModelEntry:
    manifest: archive.Manifest
    path: Path
    url: str
    encrypted: bool
    min_workers: int
    failed: str | None = None  # why its workers cannot load it (reported by the worker pool)

    @property
    def queue(self) -> str:
        return queue_name(self.manifest.name, self.manifest.version)


def _version_key(version: str) -> tuple[int, int, str]:
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


class ModelRegistry:
    def __init__(self, store: Path) -> None:
        self.store = store.resolve()
        self._models: dict[str, dict[str, ModelEntry]] = {}
        self._defaults: dict[str, str] = {}  # set-default by the management API

    def locate(self, url: str) -> Path:
        """An archive inside the model store; anything else (a URL, an escape) is refused."""
        if "://" in url or url.startswith("/") or "\\" in url:
            raise BadRequest(
                f"model url {url!r} must be a path relative to the model store "
                "(no network fetch, no absolute path)"
            )
        if not url.isprintable():
            raise BadRequest("model url must not contain control characters")
        rel = PurePosixPath(url)
        if ".." in rel.parts or not url:
            raise BadRequest(f"model url {url!r} must stay inside the model store")
        path = (self.store / rel).resolve()
        if not path.is_relative_to(self.store):
            raise BadRequest(f"model url {url!r} leads outside the model store")
        if path.suffix != ".tsm" or not path.is_file():
            raise NotFound(f"no model archive {url!r} in the model store")
        return path

    def register(self, url: str, min_workers: int) -> ModelEntry:
        path = self.locate(url)
        head = archive.read_header(path)
        m = head.manifest
        if m.version in self._models.get(m.name, {}):
            raise Conflict(f"model {m.name} version {m.version} is already registered")
        entry = ModelEntry(m, path, url, head.encrypted, min_workers)
        self._models.setdefault(m.name, {})[m.version] = entry
        return entry

    def unregister(self, name: str, version: str | None) -> ModelEntry:
        entry = self.resolve(name, version)
        versions = self._models[name]
        del versions[entry.manifest.version]
        if self._defaults.get(name) == entry.manifest.version:
            del self._defaults[name]
        if not versions:
            del self._models[name]
        return entry

    def resolve(self, name: str, version: str | None = None) -> ModelEntry:
        versions = self._models.get(name)
        if not versions:
            served = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"unknown model '{name}' (this server serves: {served})")
        if version is None:
            return versions[self.default_version(name)]
        if version not in versions:
            raise NotFound(f"model '{name}' has no version '{version}' (has {sorted(versions)})")
        return versions[version]

    def default_version(self, name: str) -> str:
        """The version set by ``set_default``; else the one whose manifest says
        ``extra.default_version: true``; else the greatest numeric version; else the greatest
        name."""
        versions = self._models[name]
        if name in self._defaults:
            return self._defaults[name]
        marked = [v for v, e in versions.items() if e.manifest.extra.get("default_version")]
        return max(marked or versions, key=_version_key)

    def set_default(self, name: str, version: str) -> None:
        """Requests that name no version go to ``version`` from now on."""
        self.resolve(name, version)
        self._defaults[name] = version

    def versions(self, name: str) -> list[str]:
        return sorted(self._models.get(name, {}), key=_version_key)

    def entries(self) -> list[ModelEntry]:
        return [e for versions in self._models.values() for e in versions.values()]

    def mark_unservable(self, queue: str, reason: str) -> None:
        """The worker pool says ``queue``'s workers cannot serve it: answer 503 with ``reason``."""
        for entry in self.entries():
            if entry.queue == queue:
                entry.failed = reason

    def scan(self, min_workers: int | Callable[[str, str], int]) -> list[ModelEntry]:
        """Register every archive at the top of the model store (what ``serve`` starts with),
        each with ``min_workers`` workers, or as many as ``min_workers(name, version)`` says."""
        found = []
        for path in sorted(self.store.glob("*.tsm")):
            entry = self.register(path.name, 0)
            m = entry.manifest
            entry.min_workers = (
                min_workers if isinstance(min_workers, int) else min_workers(m.name, m.version)
            )
            found.append(entry)
        return found
