"""The one error hierarchy of trustserve.

Every error a user can meet is a ``TrustserveError``; its ``status`` is the
HTTP status the frontend answers with (the mapping to a response body lives in
``trustserve.responses`` and nowhere else). Messages say what was
wrong and never carry a secret.

    TrustserveError (500)
    ├── BadRequest (400)
    │   ├── InvalidInput            wrong tensor name / datatype / shape, bad JSON
    │   ├── ArchiveError            a model archive that cannot be used
    │   ├── CannotOpenSealed        sealed request that fails to open
    │   ├── UnknownKeyId            sealed request for a key id we do not hold
    │   └── Expired                 sealed request outside its freshness window
    ├── Unauthorized (401)
    ├── Forbidden (403)
    │   └── AttestationRefused      evidence refused by a policy (names the claim)
    ├── NotFound (404)              unknown model / version / key id
    ├── Conflict (409)
    │   └── Replayed                a nonce seen before
    ├── PayloadTooLarge (413)
    ├── TooManyRequests (429)       a per-client bound reached (carries retry_after)
    ├── Unavailable (503)           queue full, broker down (carries retry_after)
    ├── DeadlineExceeded (504)
    └── ConfigError (500)           the operator's configuration is unusable
"""

from __future__ import annotations


class TrustserveError(Exception):
    status = 500


class BadRequest(TrustserveError):
    status = 400


class InvalidInput(BadRequest):
    pass


class ArchiveError(BadRequest):
    pass


class CannotOpenSealed(BadRequest):
    def __init__(self) -> None:
        super().__init__("cannot open sealed request")


class UnknownKeyId(BadRequest):
    pass


class Expired(BadRequest):
    pass


class Unauthorized(TrustserveError):
    status = 401


class Forbidden(TrustserveError):
    status = 403


class AttestationRefused(Forbidden):
    """Evidence failed a policy; ``claim`` names the claim that failed."""

    def __init__(self, claim: str, detail: str) -> None:
        super().__init__(f"{claim}: {detail}")
        self.claim = claim
        self.detail = detail


class NotFound(TrustserveError):
    status = 404


class Conflict(TrustserveError):
    status = 409


class Replayed(Conflict):
    pass


class PayloadTooLarge(TrustserveError):
    status = 413


class TooManyRequests(TrustserveError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(TrustserveError):
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(TrustserveError):
    status = 504


class ConfigError(TrustserveError):
    status = 500
