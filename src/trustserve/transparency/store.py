"""The largest verified checkpoint a client has seen, per log, under its home.

``HOME/transparency/<origin, '/' -> '_'>.checkpoint`` holds the signed note (with its
cosignatures) of the largest checkpoint that passed every check. It is written atomically,
under an exclusive lock, and only ever replaced by a larger one: two processes of one client
cannot move it backwards, and a crash leaves the old or the new note, never half of one.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trustserve.errors import ConfigError, TransparencyRefused
from trustserve.files import write_atomic
from trustserve.home import default_home
from trustserve.transparency import note
from trustserve.transparency.note import Checkpoint


def transparency_dir(home: Path) -> Path:
    return home / "transparency"


class CheckpointStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else transparency_dir(default_home())

    def path(self, origin: str) -> Path:
        name = origin.replace("/", "_")
        if not name or name.startswith(".") or any(c.isspace() or c == "\\" for c in name):
            raise TransparencyRefused(f"log origin {origin[:80]!r} is not a usable file name")
        return self.directory / f"{name}.checkpoint"

    def latest_note(self, origin: str) -> str | None:
        """The stored signed note for ``origin`` (None if this client saw none yet)."""
        path = self.path(origin)
        try:
            return path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the stored checkpoint {path}: {exc}") from None

    def latest(self, origin: str) -> Checkpoint | None:
        text = self.latest_note(origin)
        if text is None:
            return None
        try:
            checkpoint = Checkpoint.from_text(note.parse(text).text)
        except TransparencyRefused as exc:
            where = self.path(origin)
            raise ConfigError(f"the stored checkpoint {where} is damaged: {exc}") from None
        if checkpoint.origin != origin:
            raise ConfigError(f"the stored checkpoint {self.path(origin)} is of another log")
        return checkpoint

    def save(self, signed_note: str) -> bool:
        """Keep ``signed_note`` (verified by the caller) if it is larger than the stored one;
        True if it was written."""
        checkpoint = Checkpoint.from_text(note.parse(signed_note).text)
        with self._locked():
            stored = self.latest(checkpoint.origin)
            if stored is not None and stored.size >= checkpoint.size:
                return False
            write_atomic(self.path(checkpoint.origin), signed_note.encode())
        return True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
