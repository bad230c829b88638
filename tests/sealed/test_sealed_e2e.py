"""Sealed inference against a real stack (embedded KMS, simulated attestation)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest

from tests.support import RunningStack, png, tiny_expected
from trustserve.attestation import Policy
from trustserve.client import AsyncTrustserveClient, ClientPolicy, TrustserveClient
from trustserve.client.sdk import prepare
from trustserve.client.verify import ServingTarget, verify
from trustserve.crypto.sealing import CONTENT_TYPE, KEY_ID_HEADER, Route, seal_request
from trustserve.errors import AttestationRefused
from trustserve.keyrelease.bundle import encode_nonce
from trustserve.tensors import Tensor, encode_binary


def dev_policy(stack: RunningStack) -> ClientPolicy:
    """Trusts simulated evidence from this one installation only."""
    return ClientPolicy.development(stack.home)


def sealed_client(stack: RunningStack) -> TrustserveClient:
    return TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca)


def requests_seen(stack: RunningStack) -> float:
    text = httpx.get(f"https://127.0.0.1:{stack.metrics_port}/metrics", verify=str(stack.ca)).text
    counts = re.findall(
        r'trustserve_requests_total\{api="v2",model="tiny",status="\d+",version="1"\} (\S+)', text
    )
    return sum(float(c) for c in counts)


def test_sealed_infer_gives_what_a_standard_request_gives(tiny_stack: RunningStack) -> None:
    x = np.random.default_rng().standard_normal((3, 4)).astype(np.float32)
    with (
        sealed_client(tiny_stack) as sealed,
        TrustserveClient(tiny_stack.url, ca=tiny_stack.ca, sealed=False) as standard,
    ):
        a = sealed.infer("tiny", {"x": x})
        b = standard.infer("tiny", {"x": x})
    y, _ = tiny_expected(x)
    np.testing.assert_allclose(a["y"], y, rtol=1e-6)
    np.testing.assert_array_equal(a["y"], b["y"])
    np.testing.assert_array_equal(a["s"], b["s"])


def test_sealed_image_gives_the_same_top_k_as_the_torchserve_api(tiny_stack: RunningStack) -> None:
    image = png((20, 30, 240))
    with sealed_client(tiny_stack) as c:
        sealed = c.predict("colour", image)
    with tiny_stack.client() as c:
        standard = c.post("/predictions/colour", content=image).json()
    assert sealed == standard and next(iter(sealed)) == "blue"


async def test_async_client(tiny_stack: RunningStack) -> None:
    x = np.ones((2, 4), np.float32)
    async with AsyncTrustserveClient(
        tiny_stack.url, policy=dev_policy(tiny_stack), ca=tiny_stack.ca
    ) as c:
        out = await c.infer("tiny", {"x": x}, version="1")
    np.testing.assert_allclose(out["y"], 3 * np.ones((2, 4)))


@pytest.mark.parametrize(
    ("policy", "claim"),
    [
        (lambda stack: ClientPolicy(Policy.default()), "tee"),
        (
            lambda stack: ClientPolicy(
                Policy.from_mapping(
                    {
                        "allow_simulated": True,
                        "measurements": [{"tee": "sim"}],
                        "sim_platform_keys": ["ab" * 32],
                    }
                )
            ),
            "platform_key",
        ),
        (
            lambda stack: ClientPolicy(Policy.development(stack.home)),
            "release_policy.allow_simulated",
        ),
        (
            lambda stack: replace(
                dev_policy(stack),
                workers=replace(
                    dev_policy(stack).workers,
                    measurements=Policy.from_mapping(
                        {"measurements": [{"tee": "sim", "sim_measurement": "ab" * 32}]}
                    ).measurements,
                ),
            ),
            "release_policy.measurements",
        ),
    ],
    ids=[
        "strict-default",
        "other-platform-key",
        "release-policy-admits-sim",
        "release-policy-admits-other-code",
    ],
)
def test_a_client_whose_policy_does_not_match_sends_nothing(
    tiny_stack: RunningStack, policy: object, claim: str
) -> None:
    before = requests_seen(tiny_stack)
    client = TrustserveClient(tiny_stack.url, policy=policy(tiny_stack), ca=tiny_stack.ca)  # type: ignore[operator]
    with client as c, pytest.raises(AttestationRefused) as refused:
        c.infer("tiny", {"x": np.ones((1, 4), np.float32)})
    assert refused.value.claim == claim
    assert requests_seen(tiny_stack) == before


def _target(stack: RunningStack) -> ServingTarget:
    with sealed_client(stack) as c:
        return c.verify()


def _post(
    stack: RunningStack, body: bytes, key_id: str, path: str = "/v2/models/tiny/versions/1/infer"
) -> httpx.Response:
    with stack.client() as c:
        return c.post(
            path,
            content=body,
            headers={"Content-Type": CONTENT_TYPE, KEY_ID_HEADER: key_id},
        )


def _still_serving(stack: RunningStack) -> None:
    with sealed_client(stack) as c:
        np.testing.assert_allclose(
            c.infer("tiny", {"x": np.zeros((1, 4), np.float32)})["y"], [[1, 1, 1, 1]]
        )


def test_tampered_ciphertext_is_400_without_detail(tiny_stack: RunningStack) -> None:
    target = _target(tiny_stack)
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    for i in (5, len(p.body) // 2, len(p.body) - 3):
        bad = bytearray(p.body)
        bad[i] ^= 0x10
        r = _post(tiny_stack, bytes(bad), target.key_id)
        assert r.status_code == 400
        assert r.json() == {"error": "cannot open sealed request", "code": "cannot_open_sealed"}
    _still_serving(tiny_stack)


def test_unknown_key_id_is_400_naming_the_current_one(tiny_stack: RunningStack) -> None:
    target = _target(tiny_stack)
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    r = _post(tiny_stack, p.body, "srv-0000000000000000")
    assert r.status_code == 400
    assert target.key_id in r.json()["error"] and "attestation" in r.json()["error"]
    _still_serving(tiny_stack)


def test_replay_is_409(tiny_stack: RunningStack) -> None:
    target = _target(tiny_stack)
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    assert _post(tiny_stack, p.body, target.key_id).status_code == 200
    again = _post(tiny_stack, p.body, target.key_id)
    assert again.status_code == 409 and "replay" in again.json()["error"]
    _still_serving(tiny_stack)


def test_expired_request_is_400(tiny_stack: RunningStack) -> None:
    target = _target(tiny_stack)
    x = Tensor("x", "FP32", (1, 4), np.ones((1, 4), np.float32))
    body, hlen = encode_binary({}, "inputs", [x])
    old, _ = seal_request(
        target.public_key, Route("tiny", "1", target.key_id), body, hlen, now=time.time() - 3600
    )
    r = _post(tiny_stack, old, target.key_id)
    assert r.status_code == 400 and "freshness window" in r.json()["error"]
    _still_serving(tiny_stack)


def test_sealed_to_one_model_cannot_be_sent_to_another(tiny_stack: RunningStack) -> None:
    target = _target(tiny_stack)
    p = prepare("colour", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    r = _post(tiny_stack, p.body, target.key_id)  # posted to tiny
    assert r.status_code == 400
    assert r.json() == {"error": "cannot open sealed request", "code": "cannot_open_sealed"}


def test_rotation_keeps_the_previous_key_working(tiny_stack: RunningStack) -> None:
    """Runs last in this module: it rotates the stack's serving key."""
    old = _target(tiny_stack)
    sealed_to_old = prepare("tiny", None, {"x": np.full((1, 4), 2, np.float32)}, None, old)
    tiny_stack.rotate_serving_key()
    time.sleep(1.1)  # frontend and workers refresh their view of the keys at most once a second
    with sealed_client(tiny_stack) as c:
        new = c.verify(refresh=True)
        assert new.key_id != old.key_id
        np.testing.assert_allclose(
            c.infer("tiny", {"x": np.ones((1, 4), np.float32)})["y"], [[3, 3, 3, 3]]
        )
    assert _post(tiny_stack, sealed_to_old.body, old.key_id).status_code == 200


def test_a_nonce_passes_through_the_frontend_to_fresh_evidence(tiny_stack: RunningStack) -> None:
    nonce = os.urandom(32)
    with tiny_stack.client() as c:
        r = c.get("/v2/trustserve/attestation", params={"nonce": encode_nonce(nonce)})
        again = c.get("/v2/trustserve/attestation", params={"nonce": encode_nonce(nonce)})
        bad = c.get("/v2/trustserve/attestation", params={"nonce": "c2hvcnQ"})
    assert r.status_code == 200 and r.json()["nonce_batch"]["tree_size"] >= 1
    assert verify(r.json(), dev_policy(tiny_stack), nonce=nonce).models  # under the batch's root
    assert again.json()["evidence"] != r.json()["evidence"]  # made again, not cached
    assert bad.status_code == 400 and "nonce" in bad.json()["error"]
    kms = f"https://127.0.0.1:{tiny_stack.kms_port}/v1/attestation"
    direct = httpx.get(kms, params={"nonce": "x" * 100}, verify=str(tiny_stack.ca))
    assert direct.status_code == 400 and "nonce" in direct.json()["error"]
