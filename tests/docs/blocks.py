"""The tested command blocks of a document, and a shell that runs them like a user would.

A block is tested when the line directly above its fence is a marker::

    <!-- doctest: NAME -->             run it; it must exit 0
    <!-- doctest: NAME background -->  start it, wait until it answers, stop it at the end

Before running, the documented defaults (ports, ``~/.trustserve``) are replaced by a
small explicit table, so that tests use free ports and a temporary home.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
MARKER = re.compile(r"^<!-- doctest: ([\w-]+)( background)? -->$")


def http_ok(url: str, verify: str | bool) -> Callable[[], bool]:
    """Readiness: ``url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, verify=verify, timeout=2).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    return check


def port_open(port: int) -> Callable[[], bool]:
    """Readiness: something accepts connections on 127.0.0.1:``port``."""

    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    return check


@dataclass(frozen=True)
class Block:
    name: str
    text: str
    line: int  # of the opening fence, for messages
    background: bool = False


def marked_blocks(path: Path, names: Collection[str] | None = None) -> dict[str, Block]:
    """The marked ```sh blocks of ``path`` by name (only ``names``, if given: a document may
    also mark blocks for another test's own reader)."""
    lines = path.read_text().splitlines()
    found: dict[str, Block] = {}
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if not m or (names is not None and m[1] not in names):
            continue
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        assert fence.strip() == "```sh", f"{path}:{i + 1}: marker not above a ```sh fence"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        assert m[1] not in found, f"{path}:{i + 1}: block {m[1]} marked twice"
        found[m[1]] = Block(m[1], "\n".join(lines[i + 2 : end]) + "\n", i + 2, bool(m[2]))
    return found


def json_documents(text: str) -> list[object]:
    """The JSON values printed one after another (curl adds no newline between answers)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (i := _skip_space(text, i)) < len(text):
        value, i = decoder.raw_decode(text, i)
        docs.append(value)
    return docs


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


@dataclass
class DocShell:
    """Runs blocks with bash in ``cwd``, TRUSTSERVE_HOME=``home``, the project's venv first."""

    cwd: Path
    home: Path
    substitutions: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def script(self, block: Block) -> str:
        text = block.text
        for old, new in self.substitutions.items():
            text = text.replace(old, new)
        return text

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTSERVE_")}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            TRUSTSERVE_HOME=str(self.home),
            **self.env,
        )
        return env

    def run(self, block: Block, timeout: float = 300) -> str:
        """Run a block (``set -e``); its stdout. A failure shows the block and its output."""
        assert not block.background, block.name
        script = self.script(block)
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.cwd,
            env=self.environ(),
            capture_output=True,
            timeout=timeout,
        )
        out, err = proc.stdout.decode(), proc.stderr.decode()
        assert proc.returncode == 0, (
            f"block {block.name} (line {block.line}) exited {proc.returncode}\n"
            f"--- script\n{script}--- stdout\n{out}--- stderr\n{err}"
        )
        return out

    def start(self, block: Block, ready: Callable[[], bool], timeout: float = 240) -> Path:
        """Start a background block, poll ``ready()`` until true; its log file's path."""
        assert block.background, block.name
        log = self.home.parent / f"{block.name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", "exec " + self.script(block).strip()],
                cwd=self.cwd,
                env=self.environ(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((block.name, proc, log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{block.name} exited {proc.returncode}:\n{log.read_text()}"
            if ready():
                return log
            time.sleep(0.5)
        raise AssertionError(f"{block.name} not ready:\n{log.read_text()}")

    def stop(self) -> None:
        for _, proc, _ in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.background.clear()
