"""OHTTP review: a frontend can tag one client with the previous key config.

After a rotation the KMS-signed bundle lists two usable keys for up to the grace period
(a day by default): the current one and the previous one. Every client the SDK builds
from the bundle alone encapsulates to the current one. But a client that takes its key
config from ``/.well-known/ohttp-gateway`` (the frontend's, unverified; docs/ohttp.md
suggests ``ohttp_key_config=`` "for example from discovery") gets it accepted by
``ServingTarget.attested_ohttp_config`` as long as the bundle holds it, the previous key
included. A frontend that answers discovery with the previous config to the one client
it wants to follow (it sees that client's address on the discovery fetch) and the current
one to everyone else then knows that every relayed request with the previous key id is
that client's: the relay's unlinkability is gone, which docs/ohttp-relays.md says the
attested key list prevents ("the frontend cannot single you out through the key").
RFC 9458 section 7 (key consistency): all clients must use the same config. The SDK
should encapsulate only to the bundle's current config, whatever the caller passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trustserve.attestation import Policy, make_provider
from trustserve.client.verify import ClientPolicy, verify
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import AttestationRefused
from trustserve.kms.service import KmsService


def test_the_sdk_never_encapsulates_to_a_config_other_clients_do_not_use(tmp_path: Path) -> None:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    home = tmp_path / "home"
    kms = KmsService(home, KeyFileProtector(key_file), Policy.development(home))
    kms.rotate_serving_key()  # now: current (id 1) and previous (id 0), both usable
    target = verify(
        kms.attestation_bundle(make_provider("sim", home)), ClientPolicy.development(home)
    )
    current, previous = target.ohttp_configs
    assert target.attested_ohttp_config(None) == current  # what every SDK client uses
    # the config the frontend's discovery hands to the one client it follows
    try:
        chosen = target.attested_ohttp_config(previous.encode())
    except AttestationRefused:
        return
    assert chosen == current, f"encapsulated to key config {chosen.key_id}, not {current.key_id}"


def test_discovery_may_still_confirm_the_current_config(tmp_path: Path) -> None:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    home = tmp_path / "home"
    kms = KmsService(home, KeyFileProtector(key_file), Policy.development(home))
    target = verify(
        kms.attestation_bundle(make_provider("sim", home)), ClientPolicy.development(home)
    )
    assert target.ohttp_config is not None
    assert target.attested_ohttp_config(target.ohttp_config.encode()) == target.ohttp_config
    with pytest.raises(AttestationRefused):
        target.attested_ohttp_config(b"\x00")
