"""Binary HTTP (RFC 9292): the RFC's own examples, exact round trips, and strict refusals."""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustserve.crypto.bhttp import (
    MAX_VARINT,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_varint,
)
from trustserve.errors import BadRequest

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc_bhttp.json").read_text())
PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def rfc_request() -> Request:
    r = VECTORS["request"]
    headers = tuple((n, v) for n, v in r["headers"])
    return Request(r["method"], r["scheme"], r["authority"], r["path"], headers, r["body"].encode())


def rfc_response(name: str) -> Response:
    r = VECTORS[name]
    return Response(r["status"], tuple((n, v) for n, v in r["headers"]), r["body"].encode())


def hexof(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name]["hex"])


# -- the RFC 9292 examples (section 5) ---------------------------------------------------------


def test_rfc_known_length_request_decodes_and_encodes_to_the_same_bytes() -> None:
    data = hexof("known_length_request")
    assert decode_request(data) == rfc_request()
    assert encode_request(rfc_request()) == data


def test_rfc_known_length_request_may_drop_its_empty_content_and_trailers() -> None:
    data = hexof("known_length_request")
    assert decode_request(data[:-1]) == rfc_request()  # no trailer section
    assert decode_request(data[:-2]) == rfc_request()  # no content either


def test_rfc_indeterminate_length_request_with_padding_and_truncation() -> None:
    data = hexof("indeterminate_length_request")
    for cut in range(13):  # the RFC: "anything up to 12 bytes can be removed"
        assert decode_request(data[: len(data) - cut]) == rfc_request()
    with pytest.raises(BadRequest, match="header field name length or terminator"):
        decode_request(data[:-13])


def test_rfc_response_skips_the_informational_102_and_103() -> None:
    response = decode_response(hexof("indeterminate_length_response"))
    assert response == rfc_response("response")
    assert response.header("VARY") == "Accept-Encoding"


def test_rfc_known_length_response_trailers_are_checked_then_ignored() -> None:
    expected = rfc_response("response_with_trailer")
    assert decode_response(hexof("known_length_response_with_trailer")) == expected
    damaged = bytearray(hexof("known_length_response_with_trailer"))
    damaged[damaged.index(b"trailer")] = ord(":")  # a pseudo-field in the trailers
    with pytest.raises(BadRequest, match="pseudo-header"):
        decode_response(bytes(damaged))


def test_ohttp_rfc_minimal_response_has_no_header_section_at_all() -> None:
    # RFC 9458 Appendix A answers with 0x0140c8: status 200, every section truncated
    assert decode_response(bytes.fromhex("0140c8")) == Response(200)


# -- variable-length integers (RFC 9000 section 16) --------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (63, "3f"),
        (64, "4040"),
        (16383, "7fff"),
        (16384, "80004000"),
        (2**30 - 1, "bfffffff"),
        (2**30, "c000000040000000"),
        (MAX_VARINT, "ffffffffffffffff"),
    ],
)
def test_varints_take_the_fewest_bytes(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded


def test_varints_out_of_range_are_refused() -> None:
    for value in (-1, MAX_VARINT + 1):
        with pytest.raises(BadRequest, match="variable-length integer"):
            encode_varint(value)


def test_integers_need_not_be_minimal() -> None:
    # framing 0 written on 2 bytes, method length 3 on 4, status 200 on 8
    data = bytes.fromhex("4000") + bytes.fromhex("80000003") + encode_request(rfc_request())[2:]
    assert decode_request(data) == rfc_request()
    assert decode_response(bytes.fromhex("01c0000000000000c8")) == Response(200)


# -- what the decoder refuses, each with a message that says what ------------------------------

REQUEST = Request(
    "POST",
    "https",
    "gw.example",
    "/v2/models/m/versions/1/infer",
    (("content-type", "application/json"), ("date", "Sun, 06 Dec 2026 19:00:00 GMT")),
    b'{"inputs": []}',
)


def field_line(name: bytes, value: bytes) -> bytes:
    return encode_varint(len(name)) + name + encode_varint(len(value)) + value


def request_with_field(name: bytes, value: bytes) -> bytes:
    line = field_line(name, value)
    control = b"".join(encode_varint(len(p)) + p for p in (b"GET", b"https", b"", b"/"))
    return b"\x00" + control + encode_varint(len(line)) + line


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "ends where the framing indicator should be"),
        (b"\x04", "framing indicator 4 is not that of a request"),
        (b"\x01\x40\xc8", "framing indicator 1 is not that of a request"),
        (b"\x00\x03GE", "method claims 3 bytes but only 2 are left"),
        (b"\x00\x40", "ends inside the method length"),
        (b"\x00\x03GET\x05https\x00\x01/\x7f", "ends inside the header section length"),
        (b"\x00\x03GET\x05https\x00\x01/\x05\x01", "header section claims 5 bytes but only 1"),
        (b"\x00\x03GET\x05https\x00\x01/\x00\x03ab", "content claims 3 bytes but only 2"),
        (b"\x00\x03GET\x05https\x00\x01/\x00\x00\x00\x00\x01", "not zero padding"),
        (b"\x00\x03G T\x05https\x00\x01/", "method is not an HTTP token"),
        (b"\x00\x03GET\x00\x00\x01/", "scheme is not a URI scheme"),
        (b"\x00\x03GET\x05https\x03a b\x01/", "authority has spaces"),
        (b"\x00\x03GET\x05https\x00\x02/\n", "path has spaces, controls"),
        (b"\x00\x03GET\x05https\x00\x01x", "path must start with '/'"),
        (request_with_field(b":path", b"/"), "pseudo-header field ':path' is not allowed"),
        (request_with_field(b"Date", b"x"), "field name 'Date' is not a lower-case token"),
        (request_with_field(b"a b", b"x"), "field name 'a b' is not a lower-case token"),
        (request_with_field(b"x", b"a\r\nb"), "value of field 'x' has control characters"),
        (request_with_field(b"x", b"a\x00"), "value of field 'x' has control characters"),
        (request_with_field(b"x", b" a"), "surrounding whitespace"),
        (request_with_field(b"x", b"ab")[:-1], "header section claims 5 bytes but only 4"),
        (b"\x00\x03GET\x05https\x00\x01/\x04\x01x\x05a", "field value claims 5 bytes but only 1"),
        (b"\x02\x03GET\x05https\x00\x01/\x01x\x01y", "ends where the header field name length"),
        (b"\x02\x03GET\x05https\x00\x01/\x00\x02ab", "ends where the content chunk length"),
        (b"\x02\x03GET\x05https\x00\x01/\x00\x05ab", "content chunk claims 5 bytes but only 2"),
    ],
)
def test_malformed_requests_are_refused_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_request(data)


def test_empty_field_name_in_a_known_length_section_is_refused() -> None:
    data = b"\x00\x03GET\x05https\x00\x01/\x02\x00\x00"
    with pytest.raises(BadRequest, match="field name is empty"):
        decode_request(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x03GET", "framing indicator 0 is not that of a response"),
        (b"\x01", "ends where the status code should be"),
        (b"\x01\x40\x63", "status 99 is not in 100..599"),
        (b"\x01\x42\x58", "status 600 is not in 100..599"),
        (b"\x01\x40\x66", "ends after an informational response"),
        (b"\x01\x40\x66\x00", "ends where the status code should be"),
        (b"\x01\x40\xc8\x00\x05abc", "content claims 5 bytes but only 3"),
    ],
)
def test_malformed_responses_are_refused_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_response(data)


def test_a_huge_claimed_length_is_refused_before_any_allocation() -> None:
    data = b"\x00\x03GET\x05https\x00\x01/\x00" + encode_varint(MAX_VARINT)
    with pytest.raises(BadRequest, match=f"content claims {MAX_VARINT} bytes but only 0"):
        decode_request(data)


def test_every_truncation_is_refused_unless_it_falls_where_rfc_9292_allows_it() -> None:
    data = encode_request(REQUEST)
    control = (REQUEST.method, REQUEST.scheme, REQUEST.authority, REQUEST.path)
    control_end = 1 + sum(1 + len(part) for part in control)  # each part is under 64 bytes
    content_start = len(data) - 1 - 1 - len(REQUEST.body)  # before trailer and content lengths
    allowed = {
        control_end: Request(*control),  # every section omitted
        content_start: Request(*control, REQUEST.headers),  # content and trailers omitted
        len(data) - 1: REQUEST,  # trailers omitted
    }
    for cut in range(len(data)):
        if cut in allowed:
            assert decode_request(data[:cut]) == allowed[cut]
        else:
            with pytest.raises(BadRequest):
                decode_request(data[:cut])


def test_encoding_refuses_what_decoding_would_refuse() -> None:
    with pytest.raises(BadRequest, match="pseudo-header"):
        encode_request(Request("GET", "https", "", "/", ((":path", "/"),)))
    with pytest.raises(BadRequest, match="outside latin-1"):
        encode_request(Request("GET", "https", "", "/", (("x", "\u2603"),)))
    with pytest.raises(BadRequest, match="path must start"):
        encode_request(Request("GET", "https", "", "x"))
    with pytest.raises(BadRequest, match="final status 101"):
        encode_response(Response(101))


def test_header_names_are_lower_case_and_repeats_combine() -> None:
    request = Request(
        "GET", "https", "", "/", [("Accept", "a"), ("accept", "b"), ("Cookie", "x=1")]
    )
    assert request.headers[0] == ("accept", "a")
    assert request.header("ACCEPT") == "a, b"
    assert request.header("cookie") == "x=1"
    assert request.header("date") is None
    assert decode_request(encode_request(request)) == request


# -- properties ----------------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
names = st.text(TCHARS, min_size=1, max_size=12)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
values = values.map(lambda v: v.strip(" ")).filter(lambda v: len(v) <= 40)
fields = st.lists(st.tuples(names, values), max_size=6).map(tuple)
requests = st.builds(
    Request,
    st.sampled_from(["GET", "POST", "PUT", "X-CUSTOM"]),
    st.sampled_from(["https", "http"]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789.-:", max_size=20),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789/._~%?=&-", max_size=30).map(lambda p: "/" + p),
    fields,
    st.binary(max_size=300),
)
responses = st.builds(Response, st.integers(200, 599), fields, st.binary(max_size=300))


def indeterminate(data: bytes, chunks: list[int], padding: int) -> bytes:
    """The same message re-framed as indeterminate-length (2/3), content split at ``chunks``."""
    from trustserve.crypto.bhttp import _Reader

    reader = _Reader(data)
    framing = reader.varint("framing")
    out = bytearray(encode_varint(framing + 2))
    if framing == 0:
        for _ in range(4):
            out += encode_varint(len(part := reader.prefixed("control"))) + part
    else:
        out += encode_varint(reader.varint("status"))
    out += reader.prefixed("headers") + b"\x00"
    body = reader.prefixed("content")
    cuts = sorted({c % (len(body) + 1) for c in chunks} | {0, len(body)})
    for start, end in itertools.pairwise(cuts):
        if end > start:
            out += encode_varint(end - start) + body[start:end]
    return bytes(out + b"\x00\x00" + bytes(padding))


@PROPERTIES
@given(requests, st.lists(st.integers(0, 400), max_size=4), st.integers(0, 8))
def test_requests_round_trip_in_both_framings(
    request: Request, chunks: list[int], pad: int
) -> None:
    data = encode_request(request)
    assert decode_request(data) == request
    assert decode_request(indeterminate(data, chunks, pad)) == request
    assert decode_request(data + bytes(pad)) == request


@PROPERTIES
@given(responses, st.lists(st.integers(0, 400), max_size=4), st.integers(0, 8))
def test_responses_round_trip_in_both_framings(
    response: Response, chunks: list[int], pad: int
) -> None:
    data = encode_response(response)
    assert decode_response(data) == response
    assert decode_response(indeterminate(data, chunks, pad)) == response


@PROPERTIES
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused_as_bad_request(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        outcome: Any
        try:
            outcome = decode(data)
        except BadRequest as exc:
            assert str(exc).startswith("binary HTTP: ")
            continue
        assert isinstance(outcome, (Request, Response))


@PROPERTIES
@given(requests, st.data())
def test_a_changed_byte_never_crashes_the_decoder(request: Request, data: st.DataObject) -> None:
    encoded = bytearray(encode_request(request))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(BadRequest):
        decode_request(bytes(encoded))
