"""Scaffolding for the several-hosts recipe: each "host" is a directory (its cwd and home)
and its processes; commands are templates shared with docs/deploy.md's check.

A command template is one shell line with ``{placeholders}`` for what differs between the
doc and a test run (host names, ports, URLs, the KMS identity); paths are relative to the
host's directory, so they read the same in both.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RUN: list[str] = []  # every command template the test ran, in order (checked against the doc)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTSERVE_")}
    return {**env, **(extra or {})}


def _argv(template: str, values: dict[str, str]) -> list[str]:
    RUN.append(template)
    words = shlex.split(template)
    words = words[: words.index(">")] if ">" in words else words  # Host.run writes the file
    argv = [a.format(**values) for a in words]
    if argv[0] == "trustserve":
        argv = [sys.executable, "-m", "trustserve.cli", *argv[1:]]
    if argv[0] == "python3":  # the environment's, as the doc's PATH line gives it
        argv = [sys.executable, *argv[1:]]
    return argv


@dataclass
class Host:
    """One host: a directory of its own, nothing shared but what the recipe copies."""

    name: str
    dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def run(self, template: str, env: dict[str, str] | None = None, **values: str) -> str:
        """Runs ``template``; a trailing ``> FILE`` writes its output there, as a shell would."""
        _, redirect, target = template.partition(" > ")
        out = subprocess.run(
            _argv(template, values), cwd=self.dir, env=_env(env),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, f"{template}: {out.stderr[-3000:]}"
        if redirect:
            (self.dir / target.strip()).write_text(out.stdout)
        return out.stdout

    def start(
        self, template: str, env: dict[str, str] | None = None, **values: str
    ) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{self.name}-{len(self.procs)}.log").open("wb")
        argv = _argv(template, values)
        if argv[0] == "redis-server":
            import shutil

            argv[0] = shutil.which("redis-server") or "redis-server"
        proc = subprocess.Popen(argv, cwd=self.dir, env=_env(env), stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def copy_from(self, other: Host, src: str, dst: str) -> None:
        target = self.dir / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((other.dir / src).read_bytes())
        target.chmod((other.dir / src).stat().st_mode & 0o777)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.dir.glob("*.log"))


def doc_commands(markdown: str, tag: str = "multihost") -> list[str]:
    """The command lines of the fenced blocks marked ``<!-- doctest: TAG -->``, with
    backslash continuations joined and comments dropped."""
    lines: list[str] = []
    pattern = rf"<!-- doctest: {re.escape(tag)} -->\n```[a-z]*\n(.*?)```"
    for block in re.findall(pattern, markdown, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()))
    return lines


def template_regex(template: str) -> re.Pattern[str]:
    """A template as a pattern: each ``{placeholder}`` stands for any one word or URL."""
    parts = re.split(r"\{[a-z_]+\}", " ".join(template.split()))
    return re.compile("^" + r"\S+".join(re.escape(p) for p in parts) + "$")
