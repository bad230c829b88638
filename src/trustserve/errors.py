"""The one error hierarchy of trustserve.

Every error a user can meet is a ``TrustserveError``. Each class has an HTTP
``status`` and a stable machine ``code``; an error body is
``{"error": message, "code": code}`` (built in ``trustserve.responses`` and
nowhere else). Clients decide on the code, never on the message text or the
bare status: ``error_class(code)`` is the way back from a body to a class.
Messages say what was wrong and never carry a secret.

    class                       status  code
    TrustserveError               500   internal             a bug, or nothing better fits
    ├── BadRequest                400   bad_request
    │   ├── InvalidInput          400   invalid_input        wrong tensor name / datatype / shape
    │   ├── ArchiveError          400   archive_error        a model archive that cannot be used
    │   ├── CannotOpenSealed      400   cannot_open_sealed   sealed request that fails to open
    │   ├── UnknownKeyId          400   stale_serving_key    sealed to a serving key not held (any
    │   │   │                                                more): fetch the bundle again, retry
    │   │   └── UnknownOhttpKey   400   unknown_ohttp_key    encapsulated (OHTTP) to a key config
    │   │                                                    id not held: fetch the configs again
    │   ├── Expired               400   expired              sealed request outside its window
    │   └── WrongModelVersion     400   wrong_model_version  sealed for another model version than
    │                                                        the worker's (or none)
    ├── Unauthorized              401   unauthorized
    ├── Forbidden                 403   forbidden
    │   ├── AttestationRefused    403   attestation_refused  evidence refused (names the claim)
    │   └── TransparencyRefused   403   transparency_refused a log proof, checkpoint or cosignature
    │                                                        that does not hold (rollback, fork)
    ├── NotFound                  404   not_found            unknown model / version / model key
    │                                                        / route
    ├── MethodNotAllowed          405   method_not_allowed   a route asked with the wrong method
    ├── Conflict                  409   conflict
    │   └── Replayed              409   replayed             a nonce seen before
    ├── PayloadTooLarge           413   payload_too_large
    ├── UnsupportedMediaType      415   unsupported_media_type  a body of a type the route does
    │                                                    not take (names the one it takes)
    ├── TooManyRequests           429   too_many_requests    a per-client bound (retry_after)
    ├── WorkersFailed             500   broker_failure       the broker's own notice: every worker
    │                                                        that took it died; says only "failed"
    ├── BrokerTampered            502   broker_tampered      an answer or job failed authentication
    ├── Unavailable               503   unavailable          queue full, broker down (retry_after)
    │   └── StaleServingKey       503   serving_key_lease_expired  the worker's released serving
    │                                                        keys outlived their lease unrenewed
    ├── DeadlineExceeded          504   deadline_exceeded
    └── ConfigError               500   config_error         the operator's settings are unusable
"""

from __future__ import annotations

from typing import Any


class TrustserveError(Exception):
    status = 500
    code = "internal"

    @classmethod
    def from_message(cls, message: str) -> TrustserveError:
        """The error again from the message of an error body (see ``error_class``)."""
        return cls(message)


class BadRequest(TrustserveError):
    status = 400
    code = "bad_request"


class InvalidInput(BadRequest):
    code = "invalid_input"


class ArchiveError(BadRequest):
    code = "archive_error"


class CannotOpenSealed(BadRequest):
    code = "cannot_open_sealed"

    def __init__(self, message: str = "cannot open sealed request") -> None:
        super().__init__(message)


class UnknownKeyId(BadRequest):
    code = "stale_serving_key"


class UnknownOhttpKey(UnknownKeyId):
    """An OHTTP request's key config id (its first byte) names no serving key held."""

    code = "unknown_ohttp_key"


class Expired(BadRequest):
    code = "expired"


class WrongModelVersion(BadRequest):
    """A sealed request names a model version this worker does not serve (or none)."""

    code = "wrong_model_version"


class Unauthorized(TrustserveError):
    status = 401
    code = "unauthorized"


class Forbidden(TrustserveError):
    status = 403
    code = "forbidden"


class AttestationRefused(Forbidden):
    """Evidence failed a policy; ``claim`` names the claim that failed."""

    code = "attestation_refused"

    def __init__(self, claim: str, detail: str) -> None:
        super().__init__(f"{claim}: {detail}")
        self.claim = claim
        self.detail = detail

    @classmethod
    def from_message(cls, message: str) -> TrustserveError:
        claim, _, detail = message.partition(": ")
        return cls(claim, detail)


class TransparencyRefused(Forbidden):
    code = "transparency_refused"


class NotFound(TrustserveError):
    status = 404
    code = "not_found"


class MethodNotAllowed(TrustserveError):
    status = 405
    code = "method_not_allowed"


class Conflict(TrustserveError):
    status = 409
    code = "conflict"


class Replayed(Conflict):
    code = "replayed"


class PayloadTooLarge(TrustserveError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(TrustserveError):
    status = 415
    code = "unsupported_media_type"


class WorkersFailed(TrustserveError):
    code = "broker_failure"


class BrokerTampered(TrustserveError):
    status = 502
    code = "broker_tampered"


class TooManyRequests(TrustserveError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(TrustserveError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StaleServingKey(Unavailable):
    """The worker's serving keys passed their KMS lease without renewal and were dropped."""

    code = "serving_key_lease_expired"


class DeadlineExceeded(TrustserveError):
    status = 504
    code = "deadline_exceeded"


class ConfigError(TrustserveError):
    status = 500
    code = "config_error"


def _classes(root: type[TrustserveError]) -> list[type[TrustserveError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += _classes(sub)
    return found


def error_class(code: Any) -> type[TrustserveError]:
    """The class of the hierarchy above with this machine code; TrustserveError if none."""
    for cls in _classes(TrustserveError):
        if cls.__module__ == __name__ and cls.code == code:
            return cls
    return TrustserveError
