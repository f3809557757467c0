"""The gateway's one error middleware: every answer leaves with a request id and in the caller's shape.

Owns: the request id (kept from ``x-request-id`` or generated) on every answer, the
rendering of every error — the router's 404 and 405 (with ``Allow``), a
``GatewayError`` from any handler, and any other exception (500, counted in
``fastinfer_requests_total``, logged once with its traceback through a rate limiter,
redacted) — in the API shape of the route (``/v1/messages`` answers as Anthropic,
everything else as OpenAI). Must not touch: what handlers do; it only sees what
they raise.
"""
from __future__ import annotations

import itertools
import logging
import os
import traceback

from aiohttp import web

from ..errors import GatewayError
from ..redact import redact
from .errors import error_response

REQUEST_ID = web.RequestKey("fastinfer.request_id", str)     # the id every answer carries
DATA_ROUTE = web.RequestKey("fastinfer.data_route", list)    # [deployment or None, received_at], for accounting
OPERATOR_ROUTE = web.RequestKey("fastinfer.operator_route", str)  # health, metrics, admin: counted apart

_REQUEST_ID_MAX = 128
log = logging.getLogger("fastinfer.gateway")


def api_of(path: str) -> str:
    """Which client API a path belongs to, so its errors take that API's shape."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class RequestIds:
    """``x-request-id`` kept when it is short and printable, else ``<random>-<n>``, unique per worker."""

    def __init__(self):
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def of(self, request: web.Request) -> str:
        given = request.headers.get("x-request-id")
        if given and len(given) <= _REQUEST_ID_MAX and given.isprintable():
            return given
        return f"{self._prefix}-{next(self._counter)}"


class RateLimitedLog:
    """At most ``burst`` error records per ``interval_s``; past that, one line saying how many were not written.

    A client sending garbage cannot flood the log: the count of what was suppressed is
    written when the interval ends (by a timer, so it is written even if nothing follows).
    """

    def __init__(self, logger: logging.Logger, loop, burst: int = 10, interval_s: float = 10.0):
        self.logger = logger
        self.loop = loop
        self.burst = burst
        self.interval_s = interval_s
        self._window_start = -interval_s
        self._written = 0
        self.suppressed = 0
        self._timer = None

    def error(self, message: str) -> bool:
        """Write ``message`` if the budget allows; True when it was written."""
        now = self.loop.time()
        if now - self._window_start >= self.interval_s:
            self.flush()
            self._window_start = now
            self._written = 0
        if self._written < self.burst:
            self._written += 1
            self.logger.error("%s", message)
            return True
        self.suppressed += 1
        if self._timer is None:
            self._timer = self.loop.call_at(self._window_start + self.interval_s, self.flush)
        return False

    def exception(self, context: str, error: BaseException) -> bool:
        """``context`` and ``error``'s traceback, redacted (a message may quote an upstream), if allowed."""
        return self.error(redact(f"{context}:\n" + "".join(traceback.format_exception(error)).rstrip()))

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.suppressed:
            self.logger.error("%d more internal errors in the last %g s were not logged (rate limit)",
                              self.suppressed, self.interval_s)
            self.suppressed = 0


def error_middleware(ids: RequestIds, internal_errors: RateLimitedLog, count, drain):
    """The middleware. ``count(request, status)`` accounts an error answer (see ``Gateway``);
    while ``drain.active`` (the worker drains) every answer it passes on says ``Connection: close``."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        request_id = request[REQUEST_ID] = ids.of(request)
        try:
            response = await handler(request)
        except web.HTTPException as e:          # the router: unknown path (404), wrong method (405)
            count(request, e.status)
            response = error_response(_routing_error(request, e), api_of(request.path), request_id)
        except GatewayError as e:
            count(request, e.status)
            response = error_response(e, api_of(request.path), request_id)
        except Exception as e:
            count(request, 500)
            internal_errors.exception(f"request {request_id} ({request.method} {request.path}) failed inside "
                                      "the gateway", e)
            response = error_response(GatewayError("Internal gateway error."), api_of(request.path), request_id)
        if not response.prepared:
            response.headers.setdefault("x-request-id", request_id)
            if drain.active:
                response.force_close()
        return response

    return middleware


def _routing_error(request: web.Request, e: web.HTTPException) -> GatewayError:
    if e.status == 405:
        allow = e.headers.get("Allow", "")
        return GatewayError(f"{request.method} is not allowed on {request.path}; use {allow}.", status=405,
                            type="invalid_request_error", code="method_not_allowed", headers={"Allow": allow})
    if e.status == 404:
        return GatewayError(f"No route for {request.method} {request.path}.", status=404,
                            type="invalid_request_error", code="unknown_url")
    return GatewayError(e.reason or "Bad request.", status=e.status, type="invalid_request_error")
