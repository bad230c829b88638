"""One error hierarchy: each class a status and its own stable code; the body carries both."""

from __future__ import annotations

import inspect

import orjson
import pytest

from trustserve import errors
from trustserve.errors import (
    AttestationRefused,
    CannotOpenSealed,
    TrustserveError,
    Unavailable,
    UnknownKeyId,
    error_class,
)
from trustserve.responses import error_response

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, TrustserveError) and cls.__module__ == errors.__name__
]


def test_every_class_has_its_own_code_and_it_is_drawn_in_the_docstring() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(set(codes)) == len(codes), "two classes share a code"
    doc = errors.__doc__ or ""
    for cls in CLASSES:
        assert "code" in cls.__dict__ or cls is TrustserveError, f"{cls.__name__} has no code"
        (line,) = [ln.split() for ln in doc.splitlines() if f" {cls.__name__} " in ln]
        at = line.index(cls.__name__)
        assert line[at + 1 : at + 3] == [str(cls.status), cls.code], cls.__name__


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_body_names_the_code_and_the_code_names_the_class(cls: type[TrustserveError]) -> None:
    exc = cls.from_message("claim: what went wrong")
    response = error_response(exc)
    body = orjson.loads(response.body)
    assert response.status_code == cls.status
    assert body == {"error": str(exc), "code": cls.code}
    again = error_class(body["code"]).from_message(body["error"])
    assert type(again) is cls and str(again) == str(exc)


def test_the_stale_serving_key_code() -> None:
    assert UnknownKeyId.code == "stale_serving_key"
    assert error_class("stale_serving_key") is UnknownKeyId


def test_unknown_or_missing_codes_fall_back_to_the_root() -> None:
    for code in (None, "", "no_such_code", 7):
        assert error_class(code) is TrustserveError


def test_special_constructors_survive_the_round_trip() -> None:
    refused = error_class("attestation_refused").from_message("tcb_status: OutOfDate")
    assert isinstance(refused, AttestationRefused)
    assert (refused.claim, refused.detail) == ("tcb_status", "OutOfDate")
    assert str(CannotOpenSealed()) == "cannot open sealed request"
    unavailable = error_class("unavailable").from_message("queue full")
    assert isinstance(unavailable, Unavailable) and unavailable.retry_after == 1
