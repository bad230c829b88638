"""Binary HTTP messages (RFC 9292), the plaintext inside an Oblivious HTTP request.

A message is a framing indicator (0 known-length request, 1 known-length response,
2 and 3 their indeterminate-length forms), then control data (method, scheme,
authority and path of a request; the status code of a response, after any
informational 1xx responses), a header section, the content and a trailer section,
then zero-valued padding. Every length and number is a QUIC variable-length integer
(RFC 9000, section 16).

This module encodes the known-length form and decodes both forms. Decoding is
strict: every length is checked against the bytes that are left before anything
is sliced, a message cut inside a section is refused, and so are non-zero padding,
pseudo-header fields (names starting with ``:``), field names that HTTP/2 would
refuse (not a lower-case token) and field values with control characters. Every
refusal is a ``BadRequest`` that says what was wrong. As RFC 9292 section 3.8
allows, a message may end before the length prefix of a field section or of the
content; the missing parts are empty.

Decoding is bounded, since a gateway decodes what anyone may encapsulate and nothing
before it can look inside: a field section (headers, trailers, each informational
response's) is at most ``MAX_FIELD_SECTION`` bytes of encoded field lines and
``MAX_FIELDS`` lines, checked against a known-length section's length prefix before it
is split and as a running count in the indeterminate form; indeterminate-length
content is at most ``MAX_CHUNKS`` chunks, and a response at most ``MAX_INFORMATIONAL``
informational responses. The content's size is bounded by the caller (the request
body limit), not here.

Trailers are parsed and checked like headers, then ignored: nothing in trustserve
reads a trailer, and dropping them keeps one place (the header section) where a
request's metadata lives. ``encode_*`` never writes trailers. Informational (1xx)
responses are parsed and skipped by ``decode_response``.

Field values are ``str`` holding one character per byte (latin-1), so every value
HTTP allows (obs-text included) survives a round trip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from trustserve.errors import BadRequest

MAX_VARINT = (1 << 62) - 1
# An inference request needs a handful of short headers (content-type, date, the v2
# header length, maybe accept and user-agent): these leave room for far more than that
# and keep decoding a hostile section to microseconds (docs/ohttp.md, Limits).
MAX_FIELD_SECTION = 16 * 1024  # bytes of encoded field lines in one section
MAX_FIELDS = 64  # field lines in one section
MAX_CHUNKS = 1024  # chunks of indeterminate-length content
MAX_INFORMATIONAL = 8  # 1xx responses before the final one

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # a token without upper case (RFC 9113 8.2.1)
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")
_VISIBLE = re.compile(rb"[\x21-\x7e]*")  # authority and path: no controls, spaces, DEL or non-ASCII
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls except HTAB


def encode_varint(value: int) -> bytes:
    """``value`` on the fewest bytes a QUIC variable-length integer allows."""
    if value < 0 or value > MAX_VARINT:
        raise BadRequest(f"binary HTTP: {value} does not fit a variable-length integer")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")


def _fields_tuple(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name.lower(), value) for name, value in headers)


class _Message:
    """What requests and responses share: header fields, names lower-case on the way in."""

    headers: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _fields_tuple(self.headers))

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (repeated lines joined as RFC 9110 5.3 says), or None."""
        return _header(self.headers, name)


@dataclass(frozen=True)
class Request(_Message):
    """An HTTP request: control data, header fields (names lower-case), content."""

    method: str
    scheme: str
    authority: str
    path: str
    headers: tuple[tuple[str, str], ...] = field(default=())
    body: bytes = b""


@dataclass(frozen=True)
class Response(_Message):
    """A final HTTP response: status (200..599), header fields (names lower-case), content."""

    status: int
    headers: tuple[tuple[str, str], ...] = field(default=())
    body: bytes = b""


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    wanted = name.lower()
    values = [value for key, value in headers if key == wanted]
    if not values:
        return None
    return ("; " if wanted == "cookie" else ", ").join(values)


# -- encoding -------------------------------------------------------------------------------


def _bytes(value: str, what: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise BadRequest(f"binary HTTP: {what} has characters outside latin-1") from None


def _prefixed(data: bytes) -> bytes:
    return encode_varint(len(data)) + data


def _encode_fields(fields: tuple[tuple[str, str], ...]) -> bytes:
    lines = bytearray()
    for name, value in fields:
        raw_name, raw_value = _bytes(name, "a field name"), _bytes(value, f"field {name!r}")
        _check_field(raw_name, raw_value)
        lines += _prefixed(raw_name) + _prefixed(raw_value)
    return _prefixed(bytes(lines))


def encode_request(request: Request) -> bytes:
    """The known-length binary form of ``request`` (no trailers, no padding)."""
    parts = [
        _bytes(p, "control data")
        for p in (request.method, request.scheme, request.authority, request.path)
    ]
    _check_control(*parts)
    control = b"".join(_prefixed(part) for part in parts)
    return (
        b"\x00"
        + control
        + _encode_fields(request.headers)
        + _prefixed(bytes(request.body))
        + b"\x00"
    )


def encode_response(response: Response) -> bytes:
    """The known-length binary form of ``response`` (no trailers, no padding)."""
    if not 200 <= response.status <= 599:
        raise BadRequest(f"binary HTTP: final status {response.status} is not in 200..599")
    return (
        b"\x01"
        + encode_varint(response.status)
        + _encode_fields(response.headers)
        + _prefixed(bytes(response.body))
        + b"\x00"
    )


# -- decoding -------------------------------------------------------------------------------


class _Reader:
    """A cursor over the message; every read is bounds-checked before it slices."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def varint(self, what: str) -> int:
        if self.left() < 1:
            raise BadRequest(f"binary HTTP: message ends where the {what} should be")
        first = self.data[self.pos]
        size = 1 << (first >> 6)
        if self.left() < size:
            raise BadRequest(f"binary HTTP: message ends inside the {what} ({size}-byte integer)")
        raw = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return int.from_bytes(raw, "big") & ((1 << (8 * size - 2)) - 1)

    def take(self, length: int, what: str) -> bytes:
        if length > self.left():
            raise BadRequest(
                f"binary HTTP: {what} claims {length} bytes but only {self.left()} are left"
            )
        out = bytes(self.data[self.pos : self.pos + length])
        self.pos += length
        return out

    def prefixed(self, what: str) -> bytes:
        return self.take(self.varint(f"{what} length"), what)


def _check_control(method: bytes, scheme: bytes, authority: bytes, path: bytes) -> None:
    if not _TOKEN.fullmatch(method):
        raise BadRequest("binary HTTP: the method is not an HTTP token")
    if not _SCHEME.fullmatch(scheme):
        raise BadRequest("binary HTTP: the scheme is not a URI scheme")
    if not _VISIBLE.fullmatch(authority):
        raise BadRequest("binary HTTP: the authority has spaces, controls or non-ASCII bytes")
    if not _VISIBLE.fullmatch(path):
        raise BadRequest("binary HTTP: the path has spaces, controls or non-ASCII bytes")
    if method != b"CONNECT" and not (
        path.startswith(b"/") or (method == b"OPTIONS" and path == b"*")
    ):
        raise BadRequest("binary HTTP: the path must start with '/'")


def _check_field(name: bytes, value: bytes) -> None:
    if name.startswith(b":"):
        raise BadRequest(
            f"binary HTTP: pseudo-header field {name.decode('latin-1')!r} is not allowed"
        )
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"binary HTTP: field name {name.decode('latin-1')!r} is not a lower-case token"
        )
    if _VALUE_BAD.search(value) or value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        raise BadRequest(
            f"binary HTTP: the value of field {name.decode()!r} has control characters"
            " or surrounding whitespace"
        )


class _Budget:
    """What is left of one field section's bounds; BadRequest once a field line exceeds them."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.bytes = MAX_FIELD_SECTION
        self.fields = MAX_FIELDS

    def spend(self, length: int) -> None:
        if length > self.bytes:
            raise BadRequest(
                f"binary HTTP: the {self.section} section is over {MAX_FIELD_SECTION} bytes"
            )
        self.bytes -= length

    def count(self) -> None:
        if self.fields == 0:
            raise BadRequest(
                f"binary HTTP: the {self.section} section has over {MAX_FIELDS} fields"
            )
        self.fields -= 1


def _field_line(reader: _Reader, name_length: int, budget: _Budget) -> tuple[str, str]:
    section = budget.section
    budget.count()
    budget.spend(name_length)
    name = reader.take(name_length, f"{section} field name")
    value_length = reader.varint(f"{section} field value length")
    budget.spend(value_length)
    value = reader.take(value_length, f"{section} field value")
    _check_field(name, value)
    return name.decode("ascii"), value.decode("latin-1")


def _fields(reader: _Reader, known: bool, section: str) -> tuple[tuple[str, str], ...]:
    """A field section; a message that ends where the section would start has an empty one."""
    if reader.left() == 0:
        return ()
    lines: list[tuple[str, str]] = []
    budget = _Budget(section)
    if known:
        length = reader.varint(f"{section} section length")
        budget.spend(length)  # before anything is split: the prefix bounds the whole section
        budget = _Budget(section)  # the lines are within that prefix; count them afresh
        inner = _Reader(reader.take(length, f"{section} section"))
        while inner.left():
            name_length = inner.varint(f"{section} field name length")
            if name_length == 0:
                raise BadRequest(f"binary HTTP: a {section} field name is empty")
            lines.append(_field_line(inner, name_length, budget))
        return tuple(lines)
    while (name_length := reader.varint(f"{section} field name length or terminator")) != 0:
        lines.append(_field_line(reader, name_length, budget))
    return tuple(lines)


def _content(reader: _Reader, known: bool) -> bytes:
    if reader.left() == 0:
        return b""
    if known:
        return reader.prefixed("content")
    chunks = bytearray()
    count = 0
    while (length := reader.varint("content chunk length or terminator")) != 0:
        count += 1
        if count > MAX_CHUNKS:
            raise BadRequest(
                f"binary HTTP: the content has over {MAX_CHUNKS} chunks; send the known-length form"
            )
        chunks += reader.take(length, "content chunk")
    return bytes(chunks)


def _padding(reader: _Reader) -> None:
    rest = reader.data[reader.pos :]
    if bytes(rest) != bytes(len(rest)):
        raise BadRequest("binary HTTP: bytes after the message are not zero padding")


def _framing(reader: _Reader, known: int, indeterminate: int, kind: str) -> bool:
    framing = reader.varint("framing indicator")
    if framing not in (known, indeterminate):
        raise BadRequest(f"binary HTTP: framing indicator {framing} is not that of a {kind}")
    return framing == known


def decode_request(data: bytes) -> Request:
    """The request in ``data`` (either framing); BadRequest says what is malformed."""
    reader = _Reader(data)
    known = _framing(reader, 0, 2, "request")
    method, scheme, authority, path = (
        reader.prefixed(what) for what in ("method", "scheme", "authority", "path")
    )
    _check_control(method, scheme, authority, path)
    headers = _fields(reader, known, "header")
    body = _content(reader, known)
    _fields(reader, known, "trailer")
    _padding(reader)
    return Request(
        method.decode(), scheme.decode(), authority.decode(), path.decode(), headers, body
    )


def decode_response(data: bytes) -> Response:
    """The final response in ``data`` (either framing), informational responses skipped."""
    reader = _Reader(data)
    known = _framing(reader, 1, 3, "response")
    informational = 0
    while True:
        status = reader.varint("status code")
        if 100 <= status <= 199:
            informational += 1
            if informational > MAX_INFORMATIONAL:
                raise BadRequest(f"binary HTTP: over {MAX_INFORMATIONAL} informational responses")
            if reader.left() == 0:
                raise BadRequest("binary HTTP: message ends after an informational response")
            _fields(reader, known, "informational header")
            continue
        if not 200 <= status <= 599:
            raise BadRequest(f"binary HTTP: status {status} is not in 100..599")
        break
    headers = _fields(reader, known, "header")
    body = _content(reader, known)
    _fields(reader, known, "trailer")
    _padding(reader)
    return Response(status, headers, body)
