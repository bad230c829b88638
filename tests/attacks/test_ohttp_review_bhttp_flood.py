"""OHTTP review: Binary HTTP decoding has no bound on field sections or content chunks.

Anyone can encapsulate to the public key config (through a relay, anonymously), and only
the worker, in its single decode thread inside the TEE, sees what is inside. A request
whose header (or trailer) section is nothing but tiny fields (``01 'a' 00``: 3 bytes a
field) makes ``bhttp.decode_request`` build a Python tuple per field after two regex
checks: ~6-10 us and ~180 bytes of heap per 3 bytes of input here, so one request at the
default 64 MiB body limit holds the worker's decode thread for minutes and needs GBs.
Indeterminate-length content of 1-byte chunks costs ~2 us a chunk the same way. A gateway
should refuse a field section over a small bound (HTTP servers use 8 to 64 KiB) before
it splits it into fields, and bound the number of content chunks (or take only the
known-length form, which docs/ohttp.md already asks clients to send).
"""

from __future__ import annotations

import pytest

from trustserve.crypto import bhttp
from trustserve.errors import BadRequest

SECTION = 128 * 1024  # far more than any inference request's header section needs
TINY_FIELD = b"\x01a\x00"  # name "a", empty value
PATH = b"/v2/models/tiny/versions/1/infer"
CONTROL = b"\x04POST\x05https\x00" + bhttp.encode_varint(len(PATH)) + PATH
FIELDS = TINY_FIELD * (SECTION // len(TINY_FIELD))


def known(headers: bytes, body: bytes = b"{}", trailers: bytes = b"") -> bytes:
    prefixed = [bhttp.encode_varint(len(part)) + part for part in (headers, body, trailers)]
    return b"\x00" + CONTROL + b"".join(prefixed)


def test_a_well_formed_request_still_decodes() -> None:
    request = bhttp.decode_request(known(b"\x04date\x03now"))
    assert request.path.endswith("/infer") and request.header("date") == "now"


@pytest.mark.parametrize(
    "message",
    [
        known(FIELDS),
        known(b"", trailers=FIELDS),
        b"\x02" + CONTROL + FIELDS + b"\x00" + b"\x00" + b"\x00",  # indeterminate headers
    ],
    ids=["known-headers", "known-trailers", "indeterminate-headers"],
)
def test_a_field_flood_is_refused_before_it_is_split(message: bytes) -> None:
    with pytest.raises(BadRequest):
        bhttp.decode_request(message)


def test_a_content_of_tiny_chunks_is_refused() -> None:
    chunks = b"\x01x" * (SECTION // 2)
    message = b"\x02" + CONTROL + b"\x00" + chunks + b"\x00" + b"\x00"
    with pytest.raises(BadRequest):
        bhttp.decode_request(message)
