"""Files that must never be seen half-written, and files that hold secrets (where state
lives: ``trustserve.home``)."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

# re-exported for callers from before trustserve.home
from trustserve.home import HOME_HELP as HOME_HELP
from trustserve.home import default_home as default_home


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_secret(path: Path, data: bytes) -> None:
    """A file only its owner can read (0600), in a directory only its owner can list."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o600)


def read_or_create_token(path: Path) -> str:
    """A bearer token kept in ``path``; made (256 random bits) the first time it is asked for."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    write_secret(path, token.encode())
    return token
