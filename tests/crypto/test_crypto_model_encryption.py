from __future__ import annotations

import os

import pytest

from trustserve import archive
from trustserve.archive import Manifest, TensorSpec
from trustserve.crypto import model_encryption as me
from trustserve.errors import ArchiveError

MB = 1 << 20


def _manifest(version: str = "1") -> Manifest:
    return Manifest(
        name="tiny",
        version=version,
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 2)),),
        description="a model",
    )


@pytest.fixture(scope="module")
def model() -> bytes:
    return os.urandom(4 * MB + 12345)  # five 1 MiB segments, the last one short


@pytest.fixture(scope="module")
def data_key() -> bytes:
    return me.new_data_key()


@pytest.fixture(scope="module")
def sealed(model: bytes, data_key: bytes) -> bytes:
    return me.encrypt_archive(_manifest(), model, data_key, "model-tiny-1-k")


def _decrypt(data: bytes, key: bytes) -> bytes:
    return me.decrypt_archive(archive.parse(data), key)


def test_round_trip_gives_the_plaintext_and_a_clear_header(
    model: bytes, data_key: bytes, sealed: bytes
) -> None:
    parsed = archive.parse(sealed)
    assert parsed.manifest == _manifest()
    assert parsed.encryption == {"scheme": me.SCHEME, "key_id": "model-tiny-1-k"}
    assert model[1000:1064] not in sealed
    assert me.decrypt_archive(parsed, data_key) == model


def test_progress_reports_every_byte(model: bytes, data_key: bytes) -> None:
    seen: list[int] = []
    me.encrypt_archive(_manifest(), model, data_key, "k", progress=seen.append)
    assert sum(seen) == len(model)


def test_changed_header_is_detected(sealed: bytes, data_key: bytes) -> None:
    header_len = len(archive.parse(sealed).header_bytes)
    needle = b'"description":"a model"'
    at = sealed.index(needle)
    assert at < header_len
    tampered = sealed.replace(needle, b'"description":"b model"', 1)
    with pytest.raises(ArchiveError, match="tampered"):
        _decrypt(tampered, data_key)


def test_header_from_another_manifest_is_detected(sealed: bytes, data_key: bytes) -> None:
    parsed = archive.parse(sealed)
    swapped = archive.pack(_manifest("2"), parsed.payload, parsed.encryption)
    with pytest.raises(ArchiveError, match="tampered"):
        _decrypt(swapped, data_key)


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_payload_byte_is_detected(sealed: bytes, data_key: bytes, where: float) -> None:
    header_len = len(archive.parse(sealed).header_bytes)
    at = header_len + int((len(sealed) - header_len - 1) * where)
    tampered = bytearray(sealed)
    tampered[at] ^= 0x01
    with pytest.raises(ArchiveError, match="tampered"):
        _decrypt(bytes(tampered), data_key)


@pytest.mark.parametrize("cut", [1, 5000, MB])
def test_truncation_is_detected(sealed: bytes, data_key: bytes, cut: int) -> None:
    with pytest.raises(ArchiveError, match="truncated"):
        _decrypt(sealed[:-cut], data_key)


def test_whole_segments_removed_at_the_end_are_detected(sealed: bytes, data_key: bytes) -> None:
    parsed = archive.parse(sealed)
    # Tink's ciphertext segments are 1 MiB each: cut after the fourth, leaving four intact ones.
    assert len(parsed.payload) > 4 * MB
    cut = parsed.header_bytes + parsed.payload[: 4 * MB]
    with pytest.raises(ArchiveError, match="truncated"):
        _decrypt(cut, data_key)


def test_reordered_segments_are_detected(sealed: bytes, data_key: bytes) -> None:
    parsed = archive.parse(sealed)
    p = parsed.payload
    reordered = p[:MB] + p[2 * MB : 3 * MB] + p[MB : 2 * MB] + p[3 * MB :]
    assert len(reordered) == len(p)
    with pytest.raises(ArchiveError, match="reordered"):
        _decrypt(parsed.header_bytes + reordered, data_key)


def test_wrong_key_is_detected(sealed: bytes) -> None:
    with pytest.raises(ArchiveError, match="wrong key"):
        _decrypt(sealed, me.new_data_key())


def test_garbage_key_and_plain_archive_are_refused(sealed: bytes, model: bytes) -> None:
    with pytest.raises(ArchiveError, match="keyset"):
        _decrypt(sealed, os.urandom(32))
    with pytest.raises(ArchiveError, match="not encrypted"):
        me.decrypt_archive(archive.parse(archive.pack(_manifest(), model)), me.new_data_key())


def test_data_keys_are_fresh() -> None:
    assert me.new_data_key() != me.new_data_key()
