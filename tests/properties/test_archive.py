"""The archive header and manifest: exact round trips; anything else is ArchiveError (400)."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from tests.properties.own_errors import json_values, refused_cleanly
from tests.support import tiny_manifest
from trustserve.archive import DATATYPES, MAGIC, Manifest, TensorSpec, pack, parse
from trustserve.errors import ArchiveError

names = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
specs = st.builds(
    TensorSpec,
    names,
    st.sampled_from(list(DATATYPES)),
    st.lists(st.integers(-1, 64).filter(bool), min_size=1, max_size=4).map(tuple),
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    raw = tiny_manifest().to_json()
    raw["name"] = draw(names)
    raw["version"] = draw(st.from_regex(r"[0-9a-z][0-9a-z.]{0,7}", fullmatch=True))
    raw["max_batch_size"] = draw(st.integers(1, 256))
    raw["description"] = draw(st.text(max_size=40))
    inputs = draw(st.lists(specs, min_size=1, max_size=3, unique_by=lambda s: s.name))
    raw["inputs"] = [s.to_json() for s in inputs]
    return Manifest.from_json(raw)


@given(manifests(), st.binary(min_size=1, max_size=64))
def test_archive_round_trip_is_exact(manifest: Manifest, payload: bytes) -> None:
    assert Manifest.from_json(manifest.to_json()) == manifest
    back = parse(pack(manifest, payload))
    assert back.manifest == manifest and back.payload == payload and back.encryption is None


@given(st.binary(max_size=200))
def test_any_bytes_are_an_archive_or_archive_error(data: bytes) -> None:
    refused_cleanly(lambda: parse(data))
    refused_cleanly(lambda: parse(MAGIC + data))


@given(json_values)
def test_any_header_json_is_an_archive_or_archive_error(value: object) -> None:
    body = json.dumps(value).encode()
    data = MAGIC + struct.pack(">I", len(body)) + body + b"payload"
    error = refused_cleanly(lambda: parse(data))
    assert error is None or isinstance(error, ArchiveError)


@given(json_values)
def test_any_manifest_json_is_a_manifest_or_archive_error(value: object) -> None:
    error = refused_cleanly(lambda: Manifest.from_json(value))
    assert error is None or isinstance(error, ArchiveError)


@given(st.data())
def test_a_damaged_archive_is_an_archive_or_archive_error(data: st.DataObject) -> None:
    raw = bytearray(pack(tiny_manifest(), b"model"))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    refused_cleanly(lambda: parse(bytes(raw[: data.draw(st.integers(0, len(raw)))])))
