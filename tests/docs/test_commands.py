"""README.md's command list and the commands' own help, against the real parser."""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys

import pytest

from tests.docs.blocks import ROOT
from trustserve.cli import build_parser


def commands() -> list[str]:
    """Every ``trustserve COMMAND [ACTION]`` the parser knows (actions of a grouping one)."""
    found = []
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                groups = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                found += [f"{name} {verb}" for g in groups for verb in g.choices] or [name]
    return found


def test_the_readme_command_list_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    listing = readme[readme.index("## Commands") :].split("```")[1]
    lines = [ln.split() for ln in listing.replace("|", " | ").splitlines()]
    missing = []
    for command in commands():
        name, _, verb = command.partition(" ")
        # `trustserve NAME ...`, or NAME as an alternative (`trustserve up | serve | worker`)
        mine = [
            w
            for w in lines
            if w[:2] == ["trustserve", name] or ("|", name) in itertools.pairwise(w)
        ]
        if not mine or (verb and not any(verb in w for w in mine)):
            missing.append(command)
    assert missing == [], f"README.md's command list lacks {missing}"


@pytest.mark.parametrize(
    "command", [["serve"], ["worker"], ["kms", "identity"], ["model", "encrypt"], ["attest"]]
)
def test_home_help_names_the_default_home(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", *command, "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "~/.trustserve" in " ".join(out.stdout.split()), out.stdout
