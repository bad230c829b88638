from __future__ import annotations

import base64
import json
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustserve.crypto import hpke
from trustserve.crypto.keys import (
    ServingKey,
    ServingKeySet,
    sign_serving_keys,
    verify_serving_keys,
)
from trustserve.errors import BadRequest, CannotOpenSealed, Expired, UnknownKeyId


def test_hpke_round_trip_and_binding() -> None:
    private, public = hpke.generate_keypair()
    message = os.urandom(602112)
    sealed = hpke.seal(public, message, aad=b"model=a", info=b"step")
    assert hpke.open(private, sealed, aad=b"model=a", info=b"step") == message
    assert hpke.seal(public, message, aad=b"model=a", info=b"step") != sealed
    other, _ = hpke.generate_keypair()
    for key, aad, info in [
        (other, b"model=a", b"step"),
        (private, b"model=b", b"step"),
        (private, b"model=a", b"other"),
    ]:
        with pytest.raises(CannotOpenSealed):
            hpke.open(key, sealed, aad=aad, info=info)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(CannotOpenSealed):
        hpke.open(private, bytes(flipped), aad=b"model=a", info=b"step")
    with pytest.raises(CannotOpenSealed):
        hpke.open(private, sealed[:20])


def test_bad_public_key_is_refused() -> None:
    with pytest.raises(BadRequest):
        hpke.seal(os.urandom(16), b"x")


def test_serving_key_set_finds_current_and_previous_until_expiry() -> None:
    now = time.time()
    current = ServingKey.generate(now + 100)
    previous = ServingKey.generate(now + 10)
    keys = ServingKeySet.from_bytes(ServingKeySet((current, previous)).to_bytes())
    assert keys.current.key_id == current.key_id
    assert keys.find(previous.key_id, now).private_key == previous.private_key
    with pytest.raises(Expired):
        keys.find(previous.key_id, now + 11)
    with pytest.raises(UnknownKeyId, match=current.key_id):
        keys.find("srv-unknown", now)


def test_signed_serving_keys_verify_and_tampering_is_found() -> None:
    identity = Ed25519PrivateKey.generate()
    public = identity.public_key().public_bytes_raw()
    keys = ServingKeySet((ServingKey.generate(time.time() + 100),))
    signed = sign_serving_keys(identity, keys, time.time())
    body = verify_serving_keys(public, signed)
    assert body["keys"][0]["key_id"] == keys.current.key_id
    assert "private_key" not in json.dumps(body)
    payload = json.loads(base64.b64decode(signed["payload"]))
    payload["keys"][0]["public_key"] = base64.b64encode(os.urandom(32)).decode()
    forged = {**signed, "payload": base64.b64encode(json.dumps(payload).encode()).decode()}
    with pytest.raises(BadRequest, match="not signed"):
        verify_serving_keys(public, forged)
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(BadRequest, match="not signed"):
        verify_serving_keys(stranger, signed)
