"""Each stack option is defined once: the docs table, ``config show``, the flags of
``serve`` and the configuration file's schema all come from that one definition."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trustserve.cli import build_parser
from trustserve.stack import configfile
from trustserve.stack.cli import _settings
from trustserve.stack.options import docs_table, stack_options
from trustserve.worker.options import WorkerOptions

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
TABLE = re.compile(r"<!-- options-table:[^\n]*-->\n(.*?)<!-- end options-table -->", re.S)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _subparser(*words: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def test_the_docs_table_is_the_definition() -> None:
    found = TABLE.search(DOC.read_text())
    assert found, "docs/configuration.md lost its options table markers"
    assert found.group(1) == docs_table(), (
        "docs/configuration.md's table differs from the definition: "
        "paste `python -m trustserve.stack.options` between its markers"
    )


def test_flags_file_keys_and_config_show_come_from_one_definition(tmp_path: Path) -> None:
    options = stack_options()
    serve = _flags(_subparser("serve"))
    for o in options:
        assert configfile.BY_NAME[o.key] == o  # the file's schema (and TRUSTSERVE_*)
        if o.flag:
            action = serve[o.flag]
            assert action.dest == o.dest and action.help == o.help
    assert [k.key for k in configfile.KEYS] == [o.key for o in options]
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "config", "show", "--home", str(tmp_path)],
        capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTSERVE_")},
    ).stdout  # fmt: skip
    shown = [line.split()[0] for line in out.splitlines()[1:]]
    assert shown == [o.key for o in options]


def test_the_request_timeout_is_one_option_everywhere(tmp_path: Path) -> None:
    """The issue's example: one default, read by the flag, the variable and the file."""
    (timeout,) = [o for o in stack_options() if o.key == "limits.timeout_s"]
    assert timeout.help == "request deadline in seconds (default 30)"
    home = ["serve", "--home", str(tmp_path)]
    assert _settings(build_parser().parse_args(home)).request_timeout_s == 30.0
    conf = tmp_path / "trustserve.yaml"
    conf.write_text("limits: {timeout_s: 11}\n")
    assert _settings(build_parser().parse_args(home)).request_timeout_s == 11.0
    os.environ["TRUSTSERVE_LIMITS_TIMEOUT_S"] = "12"
    try:
        assert _settings(build_parser().parse_args(home)).request_timeout_s == 12.0
        args = build_parser().parse_args([*home, "--timeout", "13"])
        assert _settings(args).request_timeout_s == 13.0
    finally:
        del os.environ["TRUSTSERVE_LIMITS_TIMEOUT_S"]


VERIFYING = [("worker",), ("serve",), ("up",), ("kms", "serve"), ("predict",), ("batch",)]
VERIFIER_FLAGS = ("--collateral-dir", "--pccs-url", "--vcek-dir", "--kds-url")


@pytest.mark.parametrize("command", [*VERIFYING, ("verify",)], ids=" ".join)
def test_every_command_that_verifies_takes_the_same_verifier_sources(
    command: tuple[str, ...],
) -> None:
    flags = _flags(_subparser(*command))
    reference = _flags(_subparser("verify"))
    for flag in VERIFIER_FLAGS:
        assert flags[flag].help == reference[flag].help, f"{' '.join(command)} {flag}"


@pytest.mark.parametrize("command", [("worker",), ("serve",), ("up",)], ids=" ".join)
def test_provider_is_the_flag_and_attestation_an_alias_that_warns(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args([*command, "--provider", "tdx"])
    assert args.attestation == "tdx"
    assert capsys.readouterr().err == ""
    args = build_parser().parse_args([*command, "--attestation", "tpm"])
    assert args.attestation == "tpm"
    err = capsys.readouterr().err
    assert "--attestation is deprecated, use --provider" in err


def test_workers_are_started_with_the_new_spelling() -> None:
    argv = WorkerOptions(attestation="tdx").to_argv()
    assert argv == ["--provider", "tdx"]
    assert not re.search(r"--attestation\b(?!-)", _subparser("worker").format_help())


@pytest.mark.parametrize("command", [("kms", "serve"), ("attest",)], ids=" ".join)
def test_kms_serve_and_attest_keep_their_provider_flag(command: tuple[str, ...]) -> None:
    assert build_parser().parse_args([*command, "--provider", "sim"]).provider == "sim"
