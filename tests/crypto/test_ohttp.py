"""Oblivious HTTP (RFC 9458): the RFC's test vector, round trips, and every damage refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustserve.crypto import hpke
from trustserve.crypto.bhttp import (
    Request,
    Response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from trustserve.crypto.ohttp import (
    _REQUEST_LABEL,
    AEAD_AES_128_GCM,
    HEADER_SIZE,
    KEYS_TYPE,
    MIN_REQUEST_SIZE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    KeyConfig,
    _decapsulate,
    _encapsulate,
    _header,
    _parse_key_config,
    decapsulate_request,
    decode_key_configs,
    encapsulate_request,
    encode_key_configs,
    request_key_id,
)
from trustserve.errors import BadRequest, CannotOpenSealed

V = json.loads((Path(__file__).parent / "vectors" / "rfc_ohttp.json").read_text())
H = bytes.fromhex
PRIVATE, PUBLIC = hpke.generate_keypair()
CONFIG = KeyConfig(7, PUBLIC)
PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def inner_request() -> bytes:
    return encode_request(
        Request(
            "POST",
            "https",
            "gw.example",
            "/v2/models/m/versions/1/infer",
            (("content-type", "application/json"), ("date", "Sun, 06 Dec 2026 19:00:00 GMT")),
            b'{"inputs": []}',
        )
    )


# -- RFC 9458 Appendix A --------------------------------------------------------------------------


def test_rfc_key_config_parses_and_is_refused_for_lack_of_aes_256_gcm() -> None:
    key_id, kem_id, public_key, algorithms = _parse_key_config(H(V["key_config"]))
    assert (key_id, kem_id, public_key.hex()) == (V["key_id"], 0x20, V["gateway_public_key"])
    assert algorithms == [tuple(a) for a in V["symmetric_algorithms"]]
    assert hpke.public_key_of(H(V["gateway_private_key"])).hex() == V["gateway_public_key"]
    with pytest.raises(BadRequest, match="does not offer HKDF-SHA256 with AES-256-GCM"):
        KeyConfig.decode(H(V["key_config"]))


def test_rfc_request_encapsulates_to_the_published_bytes() -> None:
    info = _REQUEST_LABEL + b"\x00" + _header(V["key_id"], AEAD_AES_128_GCM)
    assert info.hex() == V["info"]
    sealed, client = _encapsulate(
        V["key_id"],
        H(V["gateway_public_key"]),
        AEAD_AES_128_GCM,
        H(V["request"]),
        ephemeral_private_key=H(V["ephemeral_private_key"]),
    )
    assert sealed.hex() == V["encapsulated_request"]
    assert client.enc.hex() == V["ephemeral_public_key"]
    assert client._secret.hex() == V["exported_secret"]
    assert client.open_response(H(V["encapsulated_response"])).hex() == V["response"]


def test_rfc_gateway_decapsulates_and_answers_with_the_published_bytes() -> None:
    request, server = _decapsulate(
        H(V["gateway_private_key"]), V["key_id"], H(V["encapsulated_request"]), AEAD_AES_128_GCM
    )
    assert request.hex() == V["request"]
    assert decode_request(request) == Request("GET", "https", "example.com", "/")
    assert server.enc.hex() == V["ephemeral_public_key"]
    assert server._secret.hex() == V["exported_secret"]
    sealed = server._seal(H(V["response"]), response_nonce=H(V["response_nonce"]))
    assert sealed.hex() == V["encapsulated_response"]
    assert decode_response(H(V["response"])) == Response(200)


def test_the_public_gateway_refuses_the_rfc_request_for_its_aes_128_suite() -> None:
    with pytest.raises(CannotOpenSealed, match="KEM, KDF or AEAD"):
        decapsulate_request(H(V["gateway_private_key"]), 1, H(V["encapsulated_request"]))
    with pytest.raises(BadRequest, match="AEAD 0x0001"):
        request_key_id(H(V["encapsulated_request"]))


# -- key configurations ---------------------------------------------------------------------------


def test_key_config_layout_and_round_trip() -> None:
    encoded = CONFIG.encode()
    assert encoded == b"\x07\x00\x20" + PUBLIC + bytes.fromhex("000400010002")
    assert KeyConfig.decode(encoded) == CONFIG
    other = KeyConfig(255, hpke.generate_keypair()[1])
    assert decode_key_configs(encode_key_configs([CONFIG, other])) == [CONFIG, other]
    assert (REQUEST_TYPE, RESPONSE_TYPE, KEYS_TYPE) == (
        "message/ohttp-req",
        "message/ohttp-res",
        "application/ohttp-keys",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x07\x00", "too short for a key id and KEM"),
        (b"\x07\x00\x10" + bytes(65), "KEM 0x0010, not X25519"),
        (CONFIG.encode()[:20], "ends inside its public key"),
        (CONFIG.encode()[:-1], "says 4 bytes of algorithms but has 3"),
        (CONFIG.encode() + b"\x00", "says 4 bytes of algorithms but has 5"),
        (CONFIG.encode()[:35] + b"\x00\x03\x00\x01\x00", "algorithms length of 3"),
        (CONFIG.encode()[:-1] + b"\x03", "does not offer HKDF-SHA256 with AES-256-GCM"),
        (b"\x07\x00\x20" + bytes(32) + bytes.fromhex("000400010002"), "not a valid X25519 key"),
    ],
)
def test_bad_key_configs_are_refused_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        KeyConfig.decode(data)


def test_key_config_fields_are_checked_on_construction() -> None:
    with pytest.raises(BadRequest, match="key id 256"):
        KeyConfig(256, PUBLIC)
    with pytest.raises(BadRequest, match="32 raw X25519 bytes"):
        KeyConfig(1, PUBLIC[:31])


def test_key_config_lists_skip_other_suites_and_refuse_bad_encoding() -> None:
    p256 = b"\x09\x00\x10" + bytes(65) + bytes.fromhex("000400010001")
    rfc = H(V["key_config"])  # X25519, but AES-128-GCM / ChaCha20 only
    listed = b"".join(len(c).to_bytes(2, "big") + c for c in (p256, rfc, CONFIG.encode()))
    assert decode_key_configs(listed) == [CONFIG]
    with pytest.raises(BadRequest, match="list is empty"):
        decode_key_configs(b"")
    with pytest.raises(BadRequest, match="ends inside a length prefix"):
        decode_key_configs(listed + b"\x00")
    with pytest.raises(BadRequest, match="claims 41 bytes but 40 are left"):
        decode_key_configs(encode_key_configs([CONFIG])[:-1])
    broken = CONFIG.encode()[:-2]
    with pytest.raises(BadRequest, match="says 4 bytes of algorithms"):  # refused whole (3.2)
        decode_key_configs(encode_key_configs([CONFIG]) + len(broken).to_bytes(2, "big") + broken)


# -- requests and responses -----------------------------------------------------------------------


def test_request_and_response_round_trip_with_fresh_randomness() -> None:
    sealed, client = encapsulate_request(CONFIG, inner_request())
    assert sealed[:HEADER_SIZE] == bytes.fromhex("07002000010002")
    assert request_key_id(sealed) == 7
    request, server = decapsulate_request(PRIVATE, 7, sealed)
    assert request == inner_request()
    assert server.enc == client.enc == sealed[HEADER_SIZE : HEADER_SIZE + 32]
    answer = encode_response(Response(200, (("content-type", "application/json"),), b"{}"))
    sealed_answer = server.seal_response(answer)
    assert client.open_response(sealed_answer) == answer
    again, client_again = encapsulate_request(CONFIG, inner_request())
    assert again != sealed and client_again.enc != client.enc  # a fresh ephemeral key each time
    second = server.seal_response(answer)
    assert second[:32] != sealed_answer[:32]  # a fresh response nonce each time
    assert client.open_response(second) == answer


def test_contexts_do_not_show_their_secret() -> None:
    sealed, client = encapsulate_request(CONFIG, inner_request())
    _, server = decapsulate_request(PRIVATE, 7, sealed)
    for context in (client, server):
        assert context._secret.hex() not in repr(context)
        assert repr(context._secret) not in repr(context)


def test_wrong_key_id_wrong_key_and_short_requests_are_refused() -> None:
    sealed, _ = encapsulate_request(CONFIG, inner_request())
    with pytest.raises(CannotOpenSealed, match="for key id 7, not 8"):
        decapsulate_request(PRIVATE, 8, sealed)
    with pytest.raises(CannotOpenSealed, match=r"^cannot open sealed request$"):
        decapsulate_request(hpke.generate_keypair()[0], 7, sealed)
    with pytest.raises(CannotOpenSealed):
        decapsulate_request(PRIVATE[:31], 7, sealed)
    with pytest.raises(CannotOpenSealed, match=f"at least {MIN_REQUEST_SIZE}"):
        decapsulate_request(PRIVATE, 7, sealed[: MIN_REQUEST_SIZE - 1])
    with pytest.raises(BadRequest, match=f"shorter than the {MIN_REQUEST_SIZE}"):
        request_key_id(sealed[:HEADER_SIZE])


def test_every_truncation_and_every_changed_byte_of_a_request_is_refused() -> None:
    sealed, _ = encapsulate_request(CONFIG, inner_request())
    for cut in range(len(sealed)):
        with pytest.raises(CannotOpenSealed):
            decapsulate_request(PRIVATE, 7, sealed[:cut])
    for position in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        with pytest.raises(CannotOpenSealed):
            decapsulate_request(PRIVATE, 7, bytes(damaged))
    with pytest.raises(CannotOpenSealed):
        decapsulate_request(PRIVATE, 7, sealed + b"\x00")


def test_every_truncation_and_every_changed_byte_of_a_response_is_refused() -> None:
    sealed, client = encapsulate_request(CONFIG, inner_request())
    _, server = decapsulate_request(PRIVATE, 7, sealed)
    answer = server.seal_response(encode_response(Response(200, (), b"result")))
    for cut in range(len(answer)):
        with pytest.raises(CannotOpenSealed):
            client.open_response(answer[:cut])
    for position in range(len(answer)):
        damaged = bytearray(answer)
        damaged[position] ^= 0x80
        with pytest.raises(CannotOpenSealed):
            client.open_response(bytes(damaged))


def test_a_response_opens_only_for_the_request_it_answers() -> None:
    first, first_client = encapsulate_request(CONFIG, inner_request())
    _, second_client = encapsulate_request(CONFIG, inner_request())
    _, first_server = decapsulate_request(PRIVATE, 7, first)
    answer = first_server.seal_response(encode_response(Response(200)))
    with pytest.raises(CannotOpenSealed):
        second_client.open_response(answer)
    assert decode_response(first_client.open_response(answer)) == Response(200)


def test_a_request_moved_to_another_key_id_does_not_open() -> None:
    # the key id is inside HPKE's info: rewriting it (to route elsewhere) breaks the seal
    sealed, _ = encapsulate_request(CONFIG, inner_request())
    moved = b"\x08" + sealed[1:]
    with pytest.raises(CannotOpenSealed, match=r"^cannot open sealed request$"):
        decapsulate_request(PRIVATE, 8, moved)


@PROPERTIES
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_any_bytes_round_trip(request: bytes, response: bytes) -> None:
    sealed, client = encapsulate_request(CONFIG, request)
    opened, server = decapsulate_request(PRIVATE, 7, sealed)
    assert opened == request
    assert client.open_response(server.seal_response(response)) == response


@PROPERTIES
@given(st.binary(max_size=200))
def test_any_bytes_are_refused_as_cannot_open(data: bytes) -> None:
    with pytest.raises(CannotOpenSealed):
        decapsulate_request(PRIVATE, 7, data)
    _, client = encapsulate_request(CONFIG, b"")
    with pytest.raises(CannotOpenSealed):
        client.open_response(data)


@pytest.mark.parametrize(
    "enc",
    [bytes(32), b"\x01" + bytes(31), b"\xff" * 32],  # small-order and non-canonical X25519 points
)
def test_a_degenerate_enc_is_cannot_open_not_a_crash(enc: bytes) -> None:
    data = bytes.fromhex("07002000010002") + enc + bytes(20)
    with pytest.raises(CannotOpenSealed, match=r"^cannot open sealed request$"):
        decapsulate_request(PRIVATE, 7, data)
