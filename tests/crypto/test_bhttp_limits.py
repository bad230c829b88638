"""Binary HTTP decoding bounds: exactly at each limit decodes, one past it is a BadRequest
that names the limit (the floods: tests/attacks/test_ohttp_review_bhttp_flood.py)."""

from __future__ import annotations

import pytest

from trustserve.crypto import bhttp
from trustserve.errors import BadRequest

CONTROL = b"\x04POST\x05https\x00\x01/"


def field(index: int, value: bytes = b"v") -> bytes:
    name = f"x-{index}".encode()
    return bhttp.encode_varint(len(name)) + name + bhttp.encode_varint(len(value)) + value


def known(headers: bytes, trailers: bytes = b"") -> bytes:
    return (
        b"\x00"
        + CONTROL
        + b"".join(bhttp.encode_varint(len(part)) + part for part in (headers, b"{}", trailers))
    )


def indeterminate(headers: bytes, content: bytes = b"\x00") -> bytes:
    return b"\x02" + CONTROL + headers + b"\x00" + content + b"\x00"


@pytest.mark.parametrize("frame", [known, indeterminate], ids=["known", "indeterminate"])
def test_the_field_count_limit(frame: object) -> None:
    assert callable(frame)
    lines = b"".join(field(i) for i in range(bhttp.MAX_FIELDS))
    assert len(bhttp.decode_request(frame(lines)).headers) == bhttp.MAX_FIELDS
    with pytest.raises(BadRequest, match=f"over {bhttp.MAX_FIELDS} fields"):
        bhttp.decode_request(frame(lines + field(bhttp.MAX_FIELDS)))


def test_a_section_over_the_byte_limit_is_refused_from_its_prefix_or_its_lines() -> None:
    big = field(0, b"v" * (bhttp.MAX_FIELD_SECTION - 16))
    assert bhttp.decode_request(known(big)).header("x-0") is not None
    too_big = field(0, b"v" * bhttp.MAX_FIELD_SECTION)
    for message in (known(too_big), known(b"", too_big), indeterminate(too_big)):
        with pytest.raises(BadRequest, match=f"over {bhttp.MAX_FIELD_SECTION} bytes"):
            bhttp.decode_request(message)
    # a claimed length over the limit is refused before the bytes are even there
    with pytest.raises(BadRequest, match="header section is over"):
        bhttp.decode_request(b"\x00" + CONTROL + bhttp.encode_varint(1 << 30))


def test_the_chunk_limit() -> None:
    chunks = b"\x01x" * bhttp.MAX_CHUNKS
    assert (
        bhttp.decode_request(indeterminate(b"", chunks + b"\x00")).body == b"x" * bhttp.MAX_CHUNKS
    )
    with pytest.raises(BadRequest, match=f"over {bhttp.MAX_CHUNKS} chunks"):
        bhttp.decode_request(indeterminate(b"", chunks + b"\x01x\x00"))


def test_the_informational_response_limit() -> None:
    final = b"\x40\xc8\x00\x00\x00"  # 200, no headers, no content, no trailers
    ok = b"\x01" + b"\x40\x66\x00" * bhttp.MAX_INFORMATIONAL + final  # 102s, no headers
    assert bhttp.decode_response(ok).status == 200
    with pytest.raises(BadRequest, match="informational"):
        bhttp.decode_response(b"\x01" + b"\x40\x66\x00" * (bhttp.MAX_INFORMATIONAL + 1) + final)
