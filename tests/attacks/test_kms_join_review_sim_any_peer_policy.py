"""Attack: a peer policy that admits simulated evidence of ANY platform key.

Such a policy (``allow_simulated: true`` with no ``sim_platform_keys``: what the release
side calls ``--allow-sim-any``) lets any process that reaches the KMS sign sim evidence
with a key it just made and receive the root key, and with it every key the KMS holds.
``kms serve`` took it with one log line, whose text ("whoever holds a listed sim platform
key") did not even say so. Now such a peer policy is refused outright (no development
use needs it: list the homes' sim keys), and one that lists sim keys prints the same
loud banner as the release side's development flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.attacks.join_fixtures import service
from tests.attacks.test_kms_join_forged_answer import Relay
from tests.kms.test_kms_etcd_serve import kms_env
from tests.support import free_port
from trustserve.attestation import Policy, VerifierSources, make_provider
from trustserve.errors import ConfigError
from trustserve.kms import join
from trustserve.kms.service import KmsService

__all__ = ["service"]  # the fixture


def _any_sim(path: Path) -> Path:
    path.write_text(json.dumps(Policy.development(None).to_json()))
    return path


def test_kms_serve_refuses_a_peer_policy_admitting_any_sim_key(tmp_path: Path) -> None:
    args = argparse.Namespace(
        peer_policy=_any_sim(tmp_path / "peer.yaml"), peer_allow_sim_any=False
    )
    with pytest.raises(ConfigError, match="any sim platform key"):
        join.peer_policy(args)


def test_only_the_explicit_development_flag_takes_such_a_peer_policy(tmp_path: Path) -> None:
    """``--peer-allow-sim-any`` (the dev overlay, whose pods make their sim keys at start)."""
    args = argparse.Namespace(peer_policy=_any_sim(tmp_path / "peer.yaml"), peer_allow_sim_any=True)
    policy = join.peer_policy(args)
    assert policy is not None and policy.allow_simulated and not policy.sim_platform_keys


def test_no_kms_hands_its_root_key_to_a_stranger_s_sim_evidence(
    service: KmsService, tmp_path: Path
) -> None:
    """The attack itself, in process: a stranger with a sim key of its own joins."""
    any_sim = Policy.development(None)
    stranger = make_provider("sim", tmp_path / "stranger")  # a key nobody listed
    relay = Relay(service, forge=False)
    try:
        relay.policy = any_sim
        joins = join.Joins(service, any_sim)
    except ConfigError:
        return  # refused before it could take a request
    # the stranger claims the donor's own release policy and the same peer policy
    release = service.policy
    joined = join._join_at(relay, any_sim, stranger, VerifierSources(), release)  # type: ignore[arg-type]
    pytest.fail(f"a stranger received the root key ({joins.policy.sim_platform_keys=}): {joined}")


def test_a_peer_policy_listing_sim_keys_prints_the_development_banner(tmp_path: Path) -> None:
    home = tmp_path / "kms1"
    listed = tmp_path / "peer.yaml"
    listed.write_text(json.dumps(Policy.development(home).to_json()))
    unreachable = f"https://127.0.0.1:{free_port()}"
    command = [
        sys.executable,
        "-m",
        "trustserve.cli",
        "kms",
        "serve",
        "--home",
        str(home),
        "--state",
        f"etcd+{unreachable}",
        "--provider",
        "sim",
        "--join",
        unreachable,
        "--peer-policy",
        str(listed),
    ]
    done = subprocess.run(command, env=kms_env(None), capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode != 0, err
    assert "DEVELOPMENT MODE" in err and "root key" in err, err
