"""Over the Redis broker: both modes (and OHTTP) answer, a replay is refused across workers,
and nothing Redis holds — its keys, nor its append-only file of every write — is plaintext."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.attacks import ohttp_support
from tests.broker.redis_server import RedisServer
from tests.support import RunningStack, start_stack, write_tiny
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.sdk import prepare
from trustserve.crypto.sealing import CONTENT_TYPE, KEY_ID_HEADER


@pytest.fixture(scope="module")
def redis_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, RunningStack]]:
    root = tmp_path_factory.mktemp("redis-sealed")
    server = RedisServer(root / "redis")
    server.start()
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    stack = start_stack(root / "home", store, "--broker", server.url(), "--workers", "2")
    yield server, stack
    stack.stop()
    server.stop()


def everything_in(server: RedisServer) -> bytes:
    """Redis's append-only file, written on every command (appendfsync always): every
    byte Redis was ever given to keep, including what has since been deleted."""
    return b"\n".join(f.read_bytes() for f in (server.directory / "data").rglob("*") if f.is_file())


def test_both_modes_over_redis_leave_no_plaintext(
    redis_stack: tuple[RedisServer, RunningStack],
) -> None:
    server, stack = redis_stack
    rng = np.random.default_rng()
    x_standard = rng.uniform(1e3, 1e4, (6, 4)).astype(np.float32)
    x_sealed = rng.uniform(1e3, 1e4, (6, 4)).astype(np.float32)
    with TrustserveClient(stack.url, ca=stack.ca, sealed=False) as c:
        y_standard = c.infer("tiny", {"x": x_standard})["y"]
    policy = ClientPolicy.development(stack.home)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as c:
        y_sealed = c.infer("tiny", {"x": x_sealed})["y"]
    x_ohttp = rng.uniform(1e3, 1e4, (6, 4)).astype(np.float32)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca, ohttp=True) as c:
        y_ohttp = c.infer("tiny", {"x": x_ohttp})["y"]
    np.testing.assert_allclose(y_standard, 2 * x_standard + 1)
    np.testing.assert_allclose(y_sealed, 2 * x_sealed + 1)
    np.testing.assert_allclose(y_ohttp, 2 * x_ohttp + 1)

    held = everything_in(server)
    assert held.count(b"XADD") >= 3  # every request went through Redis streams
    for tensor in (x_standard, y_standard, x_sealed, y_sealed, x_ohttp, y_ohttp):
        raw = np.ascontiguousarray(tensor).tobytes()
        runs = [raw[i : i + 16] for i in range(0, len(raw) - 15, 8)]
        assert not [r for r in runs if r in held], "plaintext tensor bytes in Redis"


def test_a_replay_is_refused_whichever_worker_gets_it(
    redis_stack: tuple[RedisServer, RunningStack],
) -> None:
    """Two workers, nonces claimed in Redis: the second delivery of the same sealed bytes is 409."""
    _, stack = redis_stack
    policy = ClientPolicy.development(stack.home)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as c:
        target = c.verify()
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    headers = {"Content-Type": CONTENT_TYPE, KEY_ID_HEADER: target.key_id}
    statuses = []
    with httpx.Client(base_url=stack.url, verify=str(stack.ca), timeout=30) as h:
        for _ in range(4):
            statuses.append(h.post(p.path, content=p.body, headers=headers).status_code)
    assert statuses == [200, 409, 409, 409]


def test_an_ohttp_replay_is_refused_whichever_worker_gets_it(
    redis_stack: tuple[RedisServer, RunningStack],
) -> None:
    """The HPKE enc of an OHTTP request is its nonce in Redis: refused inside, 409."""
    _, stack = redis_stack
    target = ohttp_support.target(stack)
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target, target.ohttp_config)
    assert p.ohttp is not None
    inner = [ohttp_support.opened(p.ohttp, ohttp_support.post(stack, p.body)) for _ in range(4)]
    assert [r.status for r in inner] == [200, 409, 409, 409]
