"""Typed gateway errors: what went wrong, independent of any wire format.

Every failure the gateway reports is a ``GatewayError`` carrying an HTTP status,
an error type and code; the gateway renders it in the caller's API shape
(OpenAI or Anthropic). Nothing here knows about HTTP servers or providers.
"""
from __future__ import annotations


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = None
    fallback = False          # another deployment in ``fallbacks`` may serve this request
    context_window = False    # only ``context_window_fallbacks`` may serve it (prompt too long)
    ends_connection = False   # no other request may follow it on its connection (its body was not read whole)

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None,
                 code: str | None = None, param: str | None = None, retry_after: float | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}


class BadRequest(GatewayError):
    status, type = 400, "invalid_request_error"


class Unauthorized(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PermissionDenied(GatewayError):
    """A gateway key asked for a deployment outside its ``models``."""

    status, type, code = 403, "permission_error", "model_not_allowed"


class UnknownModel(GatewayError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class BodyTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class BodyNotRead(GatewayError):
    """An answer given without the body read whole: it did not arrive in time (408), could not be
    decoded (400), or was not asked for (417, an ``Expect`` the gateway cannot meet). Whether the rest
    comes, and so where a next request on the connection would start, is unknown: the answer ends the
    connection."""

    status, type = 400, "invalid_request_error"
    ends_connection = True


class MetricsHandedOver(GatewayError):
    """/metrics or /admin/stats asked in the instant a reload moves the host's totals to the new
    generation, or of a retired worker: ask again (the connection ends, so the next ask reaches a
    worker that answers)."""

    status, type, code = 503, "overloaded_error", "metrics_handed_over"
    ends_connection = True

    def __init__(self):
        super().__init__("A reload is handing the host's totals to the next generation of workers: ask again.",
                         retry_after=0.0)


class RateLimited(GatewayError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """A gateway key has spent its budget for the period (``retry_after`` inf: it never resets)."""

    code = "budget_exceeded"


class UpstreamFailure(GatewayError):
    status, type, code = 502, "api_error", "upstream_error"


class Overloaded(GatewayError):
    status, type, code = 503, "overloaded_error", "overloaded"


class UpstreamTimeout(GatewayError):
    status, type, code = 504, "timeout_error", "upstream_timeout"


class ClientTooSlow(GatewayError):
    """A stream ran past its ``total_s`` while the gateway was not reading the upstream because its
    client read slower than the upstream sent (backpressure): the client's doing, not the replica's
    (a client error: no breaker failure, no retry)."""

    status, type, code = 408, "timeout_error", "client_too_slow"


class BackendSessionFailed(GatewayError):
    """A backend session could not be opened on the replica (SGLang ``open_session``): the
    request fails with nothing generated, and is neither retried nor sent elsewhere.
    ``outcome`` is the upstream outcome label; ``replica_failed`` whether it counts against
    the replica's circuit breaker (a 5xx, a timeout, a network error)."""

    status, type, code = 502, "api_error", "backend_session_failed"

    def __init__(self, message: str, *, outcome: str = "server_error", replica_failed: bool = False):
        super().__init__(message)
        self.outcome = outcome
        self.replica_failed = replica_failed


def forget_tracebacks(error: BaseException) -> None:
    """Drop the tracebacks of ``error`` and of the exceptions it was raised from or while handling,
    once it has been answered or judged (a rendered answer, an attempt's verdict). A traceback holds
    every frame it passed through, and those frames hold the error in their variables (``error =
    e``, a verdict): kept, each failed request left that cycle, its request and answer objects with
    it, for the cyclic garbage collector (~35 objects a 502)."""
    seen = 0
    pending = [error]
    while pending and seen < 16:      # a chain is short; a loop in one (rare, legal) ends here
        error = pending.pop()
        if error is None:
            continue
        seen += 1
        error.__traceback__ = None
        pending += (error.__cause__, error.__context__)
