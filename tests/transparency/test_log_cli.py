"""``trustserve log show|verify|monitor`` as a model owner runs them: real processes, real HTTP.

The KMS serves the log's routes on branch tlog-kms (built in parallel): here the log is
served by the stand-in of tests/transparency/log_server.py, a real loopback HTTP server
answering the contract's routes from a log built in the test. The lead points these tests at
the real KMS after merging both branches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.transparency.log_server import LogView, serving
from tests.transparency.tlog_support import TestLog, new_witness, policy_entry
from trustserve.transparency.note import Signer

CLI = [sys.executable, "-m", "trustserve.cli", "log"]


def _log(n: int) -> TestLog:
    log = TestLog()
    for i in range(n):
        log.append(policy_entry({"allow_debug": False, "max_evidence_age_s": i + 1}))
    return log


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def witness() -> Signer:
    return new_witness("witness.test/w1")


@pytest.fixture
def view(witness: Signer) -> LogView:
    return LogView(_log(12), (witness,))


@pytest.fixture
def url(view: LogView) -> Iterator[str]:
    with serving(view) as base:
        yield base


def _key(view: LogView) -> list[str]:
    return ["--log-key", view.log.signer.verifier.vkey()]


def test_show_lists_each_entry_with_its_kind_and_summary(view: LogView, url: str) -> None:
    out = run("show", url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 12
    assert lines[0].split()[0] == "0" and "release-policy" in lines[0] and "sha256=" in lines[0]
    last = run("show", url, "--last", "2").stdout.splitlines()
    assert [line.split()[0] for line in last] == ["10", "11"]


def test_verify_checks_the_signed_and_cosigned_log_then_its_growth_from_a_saved_checkpoint(
    view: LogView, url: str, witness: Signer, tmp_path: Path
) -> None:
    saved = tmp_path / "seen.checkpoint"
    checks = [*_key(view), "--witness", witness.verifier.vkey()]
    out = run("verify", url, *checks, "--save", str(saved))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "has 12 entries" in out.stdout and "trusted on first use" in out.stderr
    for i in range(5):
        view.log.append(policy_entry({"max_evidence_age_s": 100 + i}))
    out = run("verify", url, *checks, "--from", str(saved))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "has 17 entries, consistent with the trusted size 12" in out.stdout


def test_without_a_log_key_the_kms_named_key_is_trusted_on_first_use_and_said_so(
    url: str,
) -> None:
    out = run("verify", url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--log-key" in out.stderr and "trust on first use" in out.stderr


def test_verify_names_the_first_bad_entry_of_an_edited_log(view: LogView, url: str) -> None:
    for index in (9, 5):  # edited after the fact; the stored hashes are the signed tree's
        view.edited[index] = {**view.log.entries[index], "policy": {"allow_simulated": True}}
    out = run("verify", url, *_key(view))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the first bad entry of the log is 5" in out.stdout


def test_a_log_rewritten_and_signed_again_is_a_fork_of_the_saved_checkpoint(
    view: LogView, url: str, tmp_path: Path
) -> None:
    saved = tmp_path / "seen.checkpoint"
    assert run("verify", url, *_key(view), "--save", str(saved)).returncode == 0
    rewritten = TestLog(view.log.identity)
    for i, entry in enumerate(view.log.entries):
        rewritten.append(policy_entry({"allow_simulated": True}) if i == 7 else entry)
    rewritten.append(policy_entry({"note": "and one more"}))
    view.log = rewritten
    out = run("verify", url, *_key(view), "--from", str(saved))
    assert out.returncode == 1
    assert "FORK" in out.stdout or "EDITED" in out.stdout


def test_a_rolled_back_log_is_reported(view: LogView, url: str, tmp_path: Path) -> None:
    saved = tmp_path / "seen.checkpoint"
    assert run("verify", url, *_key(view), "--save", str(saved)).returncode == 0
    view.size = 9
    out = run("verify", url, *_key(view), "--from", str(saved))
    assert out.returncode == 1 and "ROLLBACK" in out.stdout


def test_a_checkpoint_without_the_witness_quorum_is_refused(view: LogView, url: str) -> None:
    other = new_witness("witness.test/w2")
    out = run("verify", url, *_key(view), "--witness", other.verifier.vkey())
    assert out.returncode != 0 and "witnesses cosigned" in out.stderr


def test_monitor_prints_each_new_entry_and_exits_on_a_fork(view: LogView, url: str) -> None:
    proc = subprocess.Popen(
        [*CLI, "monitor", url, *_key(view), "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert "from size 12" in proc.stdout.readline()
        view.log.append(policy_entry({"allow_simulated": True, "measurements": [{"tee": "sim"}]}))
        line = proc.stdout.readline()
        assert line.split()[0] == "12" and "release-policy" in line
        fork = TestLog(view.log.identity)
        for entry in view.log.entries[:10]:
            fork.append(entry)
        for i in range(4):
            fork.append(policy_entry({"fork": i}))
        view.log = fork
        rest = proc.stdout.read()
        assert proc.wait(timeout=300) == 1
        assert "FORK" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_monitor_from_a_saved_checkpoint_waits_for_cosignatures_then_prints_what_is_new(
    view: LogView, url: str, witness: Signer, tmp_path: Path
) -> None:
    saved = tmp_path / "seen.checkpoint"
    assert run("verify", url, *_key(view), "--save", str(saved)).returncode == 0
    view.log.append(policy_entry({"allow_debug": True}))
    view.log.append(policy_entry({"allow_debug": False}))
    view.witnesses = ()  # appended, not cosigned yet
    checks = [*_key(view), "--witness", witness.verifier.vkey(), "--from", str(saved)]
    proc = subprocess.Popen(
        [*CLI, "monitor", url, *checks, "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert "trying again" in proc.stderr.readline()
        view.witnesses = (witness,)
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "from size 12" in lines[0]
        assert [line.split()[0] for line in lines[1:]] == ["12", "13"]
    finally:
        proc.kill()
        proc.wait()
