"""The client policy file's ``transparency:`` section, as ``trustserve predict/batch`` read it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from tests.transparency.tlog_support import new_witness
from trustserve.client.flags import add_client_args, client_policy
from trustserve.errors import ConfigError


def _args(policy: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_client_args(parser, "input", "the input")
    return parser.parse_args(["https://frontend", "m", "x.npy", "--policy", str(policy)])


def test_the_section_names_the_witnesses_and_the_rest_is_the_evidence_policy(
    tmp_path: Path,
) -> None:
    w1, w2 = new_witness("witness.test/w1"), new_witness("witness.test/w2")
    path = tmp_path / "client.yaml"
    section = {"witnesses": [w1.verifier.vkey(), w2.verifier.vkey()], "quorum": 1}
    path.write_text(yaml.safe_dump({"allow_debug": False, "transparency": section}))
    policy = client_policy(_args(path))
    assert policy.transparency is not None and policy.transparency.to_json() == section
    assert policy.kms.allow_debug is False


def test_without_the_section_nothing_of_the_log_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "client.yaml"
    path.write_text("allow_debug: false\n")
    assert client_policy(_args(path)).transparency is None


@pytest.mark.parametrize(
    "section, says",
    [
        ({"witnesses": []}, "at least one"),
        ({"witnesses": ["nope"]}, "verifier key"),
        ({"witnesses": "a string"}, "list of witness verifier keys"),
        ("a string", "must be a mapping"),
    ],
)
def test_a_bad_section_says_what_is_wrong(tmp_path: Path, section: object, says: str) -> None:
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump({"transparency": section}))
    with pytest.raises(ConfigError) as error:
        client_policy(_args(path))
    assert says in str(error.value)
