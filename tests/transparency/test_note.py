"""Signed notes, checkpoints and witness cosignatures (C2SP formats)."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustserve.errors import TransparencyRefused
from trustserve.transparency import note
from trustserve.transparency.note import COSIGNATURE_V1, ED25519, Checkpoint, Signer, Verifier

# The example of c2sp.org/signed-note (C2SP/C2SP signed-note.md, commit 5ba5ee83).
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def _signer(name: str, kind: int = ED25519) -> Signer:
    return Signer(name, kind, Ed25519PrivateKey.generate())


def test_the_spec_example_note_verifies_with_the_spec_vkey() -> None:
    verifier = Verifier.from_vkey(SPEC_VKEY)
    assert verifier.vkey() == SPEC_VKEY
    parsed = note.parse(SPEC_NOTE)
    assert parsed.text == "This is an example message.\n"
    assert note.verified_by(parsed, [verifier]) == [verifier]
    assert parsed.render() == SPEC_NOTE


def test_a_changed_text_under_a_known_key_rejects_the_note() -> None:
    changed = note.parse(SPEC_NOTE.replace("example message", "examp1e message"))
    with pytest.raises(TransparencyRefused, match="does not verify"):
        note.verified_by(changed, [Verifier.from_vkey(SPEC_VKEY)])


def test_signatures_of_unknown_keys_are_ignored() -> None:
    other = _signer("example.com/foo").verifier  # same name, another key
    assert note.verified_by(note.parse(SPEC_NOTE), [other]) == []


def test_a_vkey_whose_id_does_not_match_its_key_is_refused() -> None:
    name, _, rest = SPEC_VKEY.partition("+")
    with pytest.raises(TransparencyRefused, match="key id"):
        Verifier.from_vkey(f"{name}+00000000+{rest.partition('+')[2]}")


def test_a_checkpoint_signed_by_the_log_and_cosigned_by_a_witness_round_trips() -> None:
    log, witness = _signer("kms.example/log"), _signer("witness.example/w1", COSIGNATURE_V1)
    checkpoint = Checkpoint("kms.example/log", 7, os.urandom(32))
    text = checkpoint.text()
    signed = note.Note(text, (note.sign(text, log), note.sign(text, witness, timestamp=1700000000)))
    parsed = note.parse(signed.render())
    assert Checkpoint.from_text(parsed.text) == checkpoint
    assert note.verified_by(parsed, [log.verifier, witness.verifier]) == [
        log.verifier,
        witness.verifier,
    ]
    assert note.cosignature_time(parsed, witness.verifier) == 1700000000
    # The cosignature covers its timestamp: moving it breaks the signature.
    name, kid, sig = parsed.signatures[1]
    moved = (name, kid, (1700000001).to_bytes(8, "big") + sig[8:])
    with pytest.raises(TransparencyRefused, match="does not verify"):
        note.verified_by(note.Note(parsed.text, (moved,)), [witness.verifier])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("log\n007\n" + base64.b64encode(bytes(32)).decode() + "\n", "decimal"),
        ("log\n7\nnot base64!\n", "base64"),
        ("log\n7\n" + base64.b64encode(bytes(31)).decode() + "\n", "SHA-256"),
        ("log\n7\n", "own lines"),
    ],
)
def test_malformed_checkpoints_are_refused_by_name(text: str, reason: str) -> None:
    with pytest.raises(TransparencyRefused, match=reason):
        Checkpoint.from_text(text)


@pytest.mark.parametrize(
    "data",
    ["no blank line\n\u2014 a AAAAAAA=\n".encode(), b"\xff\xfe\n\n", b"x" * 70000],
)
def test_malformed_notes_are_refused(data: bytes) -> None:
    with pytest.raises(TransparencyRefused):
        note.parse(data)
