"""The audit log line: records of any fields append and verify; any edit to a line is found
and reported (``verify`` answers with a report, never an exception)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.properties.own_errors import json_values
from trustserve.kms.audit import MAX_FIELD_CHARS, AuditLog, verify

fields = st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), json_values, max_size=5)


@pytest.fixture(scope="module")
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


@given(st.lists(fields, min_size=1, max_size=4))
def test_any_records_append_and_verify(
    tmp_path_factory: pytest.TempPathFactory,
    signer: Ed25519PrivateKey,
    records: list[dict[str, object]],
) -> None:
    directory = _fresh(tmp_path_factory)
    log = AuditLog(directory, signer)
    for record in records:
        log.append(
            "event",
            **{k: v for k, v in record.items() if k not in ("seq", "prev", "time", "event")},
        )
    public = signer.public_key().public_bytes_raw()
    report = verify(directory, public)
    assert report.ok and report.lines == len(records)
    for line in (directory / "audit.jsonl").read_text().splitlines():
        assert all(
            len(v) <= MAX_FIELD_CHARS + 120 for v in json.loads(line).values() if isinstance(v, str)
        )


@given(st.data())
def test_any_edit_is_found(
    tmp_path_factory: pytest.TempPathFactory, signer: Ed25519PrivateKey, data: st.DataObject
) -> None:
    directory = _fresh(tmp_path_factory)
    log = AuditLog(directory, signer)
    for i in range(3):
        log.append("event", n=i)
    path = directory / "audit.jsonl"
    raw = bytearray(path.read_bytes())
    index = int(data.draw(st.floats(0, 1)) * (len(raw) - 1))  # the log's length varies
    replacement = data.draw(st.binary(min_size=0, max_size=3))
    edited = bytes(raw[:index]) + replacement + bytes(raw[index + 1 :])
    assume(edited != bytes(raw))
    path.write_bytes(edited)
    report = verify(directory, signer.public_key().public_bytes_raw())
    assert not report.ok, f"edit at {index} to {replacement!r} not found"
