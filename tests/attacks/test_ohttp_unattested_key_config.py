"""Issue 24 item 2: a key config that is not in the verified attestation bundle is refused
by the SDK before anything is sent: one given by the caller, or served by a gateway's
discovery endpoint (the frontend is untrusted: its key configs prove nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.attacks.ohttp_support import answered, target
from tests.support import RunningStack
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.crypto import hpke, ohttp
from trustserve.errors import AttestationRefused


def client(stack: RunningStack, config: bytes | None = None) -> TrustserveClient:
    policy = ClientPolicy.development(stack.home)
    return TrustserveClient(
        stack.url, policy=policy, ca=stack.ca, ohttp=True, ohttp_key_config=config
    )


def forged(key_id: int) -> bytes:
    """A key config whose private half the attacker (a frontend, a relay) holds."""
    _, public = hpke.generate_keypair()
    return ohttp.KeyConfig(key_id, public).encode()


@pytest.mark.parametrize("same_id", [True, False], ids=["attested-id", "other-id"])
def test_a_key_config_not_in_the_bundle_is_refused_before_sending(
    tiny_stack: RunningStack, same_id: bool
) -> None:
    attested = target(tiny_stack).ohttp_config
    assert attested is not None
    key_id = attested.key_id if same_id else (attested.key_id + 1) % 256
    before = answered(tiny_stack)
    with client(tiny_stack, forged(key_id)) as c, pytest.raises(AttestationRefused) as refused:
        c.infer("tiny", {"x": np.ones((1, 4), np.float32)}, version="1")
    assert refused.value.claim == "ohttp_key_config"
    assert "not in the attested bundle" in refused.value.detail
    assert answered(tiny_stack) == before  # the server saw no request


def test_the_attested_key_config_from_discovery_is_used(tiny_stack: RunningStack) -> None:
    with tiny_stack.client() as c:
        r = c.get("/.well-known/ohttp-gateway")
    assert r.status_code == 200 and r.headers["content-type"] == ohttp.KEYS_TYPE
    configs = ohttp.decode_key_configs(r.content)
    before = answered(tiny_stack, "200")
    with client(tiny_stack, configs[0].encode()) as c:
        out = c.infer("tiny", {"x": np.ones((1, 4), np.float32)}, version="1")
    np.testing.assert_allclose(out["y"], 3 * np.ones((1, 4)))
    assert answered(tiny_stack, "200") == before + 1


def test_a_malformed_key_config_is_refused_before_sending(tiny_stack: RunningStack) -> None:
    before = answered(tiny_stack)
    with client(tiny_stack, b"\x01\x00") as c, pytest.raises(AttestationRefused) as refused:
        c.infer("tiny", {"x": np.ones((1, 4), np.float32)}, version="1")
    assert refused.value.claim == "ohttp_key_config"
    assert answered(tiny_stack) == before
