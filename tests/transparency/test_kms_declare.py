"""Releases the operator declares (``POST /v1/log/declare``, ``trustserve policy --declare-to``)
land in the KMS's transparency log as ``release-declared`` entries, proven by its checkpoint.

Against a real ``kms serve``: a declared digest is served with an inclusion proof that
verifies against the signed checkpoint; no token is a 401; ``trustserve policy`` declares
the set it built and ``trustserve log show`` lists it. In-process (the same ASGI app): each
bad body is a 400 naming the field, an oversized one a 413, and the log is left as it was.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.attacks.kms_local import local_kms
from tests.attacks.tlog_fixtures import KmsProcess, kms_home, start_kms
from trustserve.crypto import merkle
from trustserve.kms.app import create_app
from trustserve.kms.declare import MAX_BODY
from trustserve.transparency import entries as tentries
from trustserve.transparency import note
from trustserve.transparency.note import Checkpoint, Verifier

CLI = [sys.executable, "-m", "trustserve.cli"]


def _digest() -> str:
    return "sha256:" + secrets.token_hex(32)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KmsProcess, Verifier]]:
    home, key, log_key = kms_home(tmp_path_factory.mktemp("declare"))
    kms = start_kms(home, key)
    try:
        yield kms, log_key
    finally:
        kms.stop()


def _post(kms: KmsProcess, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(
        f"{kms.url}/v1/log/declare", json=body, headers=headers, verify=str(kms.ca), timeout=60
    )


def _token(kms: KmsProcess) -> str:
    return (kms.home / "kms" / "admin.token").read_text().strip()


def test_a_declared_digest_is_served_with_an_inclusion_proof_of_the_signed_checkpoint(
    running: tuple[KmsProcess, Verifier],
) -> None:
    kms, log_key = running
    digest = _digest()
    r = _post(kms, {"digest": digest, "note": "worker 1.4.2"}, _token(kms))
    assert r.status_code == 200, r.text
    index, size = r.json()["index"], r.json()["size"]
    assert index == size - 1

    parsed = note.parse(kms.checkpoint())
    assert note.verified_by(parsed, [log_key]) == [log_key]
    cp = Checkpoint.from_text(parsed.text)
    assert cp.size >= size
    page = kms.get(f"/v1/log/entries?start={index}&end={index + 1}").json()
    entry = page["entries"][0]["entry"]
    assert (entry["kind"], entry["digest"], entry["note"]) == (
        "release-declared",
        digest,
        "worker 1.4.2",
    )
    proof = kms.get(f"/v1/log/proof/inclusion?index={index}&size={cp.size}").json()["proof"]
    leaf = merkle.leaf_hash(tentries.encode(entry))
    merkle.verify_inclusion(leaf, index, cp.size, [base64.b64decode(p) for p in proof], cp.root)


def test_declaring_without_the_management_token_is_refused_and_logs_nothing(
    running: tuple[KmsProcess, Verifier],
) -> None:
    kms, _ = running
    before = Checkpoint.from_text(note.parse(kms.checkpoint()).text).size
    for token in (None, secrets.token_urlsafe(16)):
        r = _post(kms, {"digest": _digest()}, token)
        assert r.status_code == 401, r.text
        assert "bearer token" in r.json()["error"]
    assert Checkpoint.from_text(note.parse(kms.checkpoint()).text).size == before


def test_policy_declares_the_set_it_built_and_log_show_lists_it(
    running: tuple[KmsProcess, Verifier], tmp_path: Path
) -> None:
    kms, _ = running
    token_file = tmp_path / "token"
    token_file.write_text(_token(kms))
    mrtd, digest = secrets.token_hex(48), _digest()
    rtmrs = [a for i in (1, 2, 3) for a in (f"--tdx-rtmr{i}", secrets.token_hex(48))]
    made = subprocess.run(
        [*CLI, "policy", "--tdx-mrtd", mrtd, *rtmrs, "-o", str(tmp_path / "policy.yaml"),
         "--declare-to", kms.url, "--ca", str(kms.ca), "--token-file", str(token_file),
         "--declare-digest", digest, "--declare-note", "td 7"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "declared tdx release" in made.stderr and "entry " in made.stderr
    index = int(made.stderr.split("entry ")[1].split()[0])
    entry = kms.get(f"/v1/log/entries?start={index}&end={index + 1}").json()["entries"][0]
    declared = entry["entry"]
    assert declared["digest"] == digest and declared["note"] == "td 7"
    assert declared["measurement"]["tee"] == "tdx" and declared["measurement"]["mrtd"] == mrtd

    shown = subprocess.run(
        [*CLI, "log", "show", kms.url, "--ca", str(kms.ca)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.split()[0] == str(index))
    assert "release-declared" in line and f"digest={digest[:16]}" in line
    assert f"measurement=tdx(mrtd={mrtd[:16]}" in line and "note=td 7" in line


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--declare-digest", "sha256:XYZ"], "digest"),
        (["--declare-note", "x" * 201], "note"),
    ],
)
def test_policy_checks_what_it_would_declare_before_it_writes_or_sends(
    tmp_path: Path, extra: list[str], named: str
) -> None:
    out = tmp_path / "policy.yaml"
    made = subprocess.run(
        [*CLI, "policy", "--snp-measurement", secrets.token_hex(48), "-o", str(out),
         "--declare-to", "https://127.0.0.1:9", *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 2, made.stderr
    assert named in made.stderr and not out.exists()
    alone = subprocess.run(
        [*CLI, "policy", "--snp-measurement", secrets.token_hex(48), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert alone.returncode == 2 and "needs --declare-to" in alone.stderr, alone.stderr


SNP = {"tee": "sev-snp", "measurement": "ab" * 48}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([], "JSON object"),
        ({}, "digest or measurement"),
        ({"note": "only a note"}, "digest or measurement"),
        ({"digest": "sha256:" + "A" * 64}, "digest"),
        ({"digest": "sha512:" + "a" * 64}, "digest"),
        ({"digest": 7}, "digest"),
        ({"digest": "sha256:" + "a" * 64, "extra": 1}, "extra"),
        ({"measurement": "tdx"}, "measurement"),
        ({"measurement": {"tee": "z80"}}, "measurement.tee"),
        ({"measurement": {"tee": "tdx", "mrtd": "ab" * 48}}, "rtmr1"),
        ({"measurement": {**SNP, "measurement": "ab" * 47}}, "measurement.measurement"),
        ({"measurement": {**SNP, "colour": "red"}}, "colour"),
        ({"measurement": {"tee": "sim"}}, "names no value"),
        ({"measurement": SNP, "note": ""}, "note"),
        ({"measurement": SNP, "note": "a\nb"}, "note"),
        ({"measurement": SNP, "note": ["x"]}, "note"),
    ],
)
async def test_every_bad_body_is_a_400_naming_the_field_and_logs_nothing(
    tmp_path: Path, body: Any, named: str
) -> None:
    kms = local_kms(tmp_path)
    before = len(kms.state.log_view().entries)
    token = secrets.token_urlsafe(16)
    app = create_app(kms, token=token)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://kms") as client:
        r = await client.post("/v1/log/declare", json=body, headers=headers)
        assert r.status_code == 400, r.text
        assert named in r.json()["error"], r.json()
        big = b'{"note": "' + b"x" * MAX_BODY + b'"}'
        r = await client.post("/v1/log/declare", content=big, headers=headers)
        assert r.status_code == 413, r.text
        r = await client.post("/v1/log/declare", content=b"{", headers=headers)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        good = await client.post("/v1/log/declare", json={"measurement": SNP}, headers=headers)
        assert good.json() == {"index": before, "size": before + 1}, good.text
    logged = kms.state.log_view().entries
    assert len(logged) == before + 1
    assert logged[-1]["measurement"].items() >= SNP.items()  # canonical: defaults named too
    assert logged[-1]["kind"] == "release-declared" and "digest" not in logged[-1]
