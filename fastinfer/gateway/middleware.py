"""The gateway's one error middleware: every answer leaves with a request id and in the caller's shape.

Owns: the request id (kept from ``x-request-id`` or generated) on every answer, the
rendering of every error — the router's 404 and 405 (with ``Allow``), a
``GatewayError`` from any handler, and any other exception (500, its traceback
logged once through ``observe``'s rate limiter, redacted) — in the API shape of the
route (``/v1/messages`` answers as Anthropic, everything else as OpenAI), each one
told to the gateway (``answered``: counted, access-logged); and the router's refusals made
without a reference cycle (``refuse_without_cycles``). Must not touch: what handlers do; it only
sees what they raise.
"""
from __future__ import annotations

import itertools
import logging
import os

from aiohttp import web
from aiohttp.web_urldispatcher import MatchInfoError

from ..errors import GatewayError, forget_tracebacks
from ..observe import log_bug
from ..redact import redact
from .errors import error_response

REQUEST_ID = web.RequestKey("fastinfer.request_id", str)     # the id every answer carries
DATA_ROUTE = web.RequestKey("fastinfer.data_route", object)  # the gateway's record of a data request
OPERATOR_ROUTE = web.RequestKey("fastinfer.operator_route", str)  # health, metrics, admin: counted apart

_REQUEST_ID_MAX = 128
log = logging.getLogger("fastinfer.gateway")


def api_of(path: str) -> str:
    """Which client API a path belongs to, so its errors take that API's shape."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class RequestIds:
    """``x-request-id`` kept when it is short and printable, else ``<random>-<n>``, unique per worker.

    Logs and traces show a client's id redacted (it may paste anything) and one made here as it is
    (``shown``): what is made here starts with the worker's random prefix, which a client's id may
    not (one that does is replaced), so the prefix alone tells them apart, without a search."""

    def __init__(self):
        self.prefix = os.urandom(6).hex() + "-"      # what every id made here starts with
        # the next id made here, by C calls alone (no string formatting in Python on every request)
        self._next = map(self.prefix.__add__, map(str, itertools.count(1))).__next__

    def of(self, request: web.Request) -> str:
        given = request.headers.get("x-request-id")
        if given and len(given) <= _REQUEST_ID_MAX and given.isprintable() and not given.startswith(self.prefix):
            return given
        made = self._next     # a callable kept on the instance: read, then called (3.11 cannot
        return made()         # specialize ``self._next()``, a method call of an instance attribute)

    def shown(self, request_id: str) -> str:
        """``request_id`` as logs and traces show it."""
        return request_id if request_id.startswith(self.prefix) else redact(request_id)


def error_middleware(ids: RequestIds, answered, drain):
    """The middleware. ``answered(request, status, error)`` accounts an error answer (see ``Gateway``);
    while ``drain.active`` (the worker drains) every answer it passes on says ``Connection: close``."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        request_id = request[REQUEST_ID] = ids.of(request)
        try:
            response = await handler(request)
        except Exception as e:
            response = error_answer(request, e, request_id, answered)
        return finished(response, request_id, drain)

    return middleware


def error_answer(request: web.Request, e: Exception, request_id: str, answered) -> web.Response:
    """The answer to what a handler raised, in the route's API shape, told to ``answered``: the
    router's 404 or 405, a ``GatewayError`` as it says, anything else a 500 whose traceback is
    logged (rate-limited, redacted). The middleware's, and a data route's own (``Gateway._serve``,
    which the direct path calls without the middleware: one coroutine less a request)."""
    if isinstance(e, web.HTTPException):        # the router: unknown path (404), wrong method (405)
        error = _routing_error(request, e)
    elif isinstance(e, GatewayError):
        error = e
    else:
        log_bug(log, f"request {request_id} ({request.method} {request.path}) failed inside the gateway", e)
        error = GatewayError("Internal gateway error.")
    answered(request, error.status, error)
    forget_tracebacks(e)      # answered: the frames it passed through are freed now, not by the cyclic GC
    response = error_response(error, api_of(request.path), request_id)
    if error.ends_connection:
        response.force_close()
    return response


class _CycleFreeRouter(web.UrlDispatcher):
    """aiohttp's router, whose refusals leave no reference cycle. Its answer to an unknown path or
    method (``MatchInfoError``) routes to a ``SystemRoute`` that holds its own bound handler: ~7
    objects for the cyclic GC per 404 or 405 (a scanner's traffic shows in
    ``fastinfer_worker_gc_collected_objects_total``). That handler is swapped for a function raising
    the same refusal; the route is then freed as soon as its request is (the refusal's traceback,
    which holds the request, is dropped once answered: ``error_answer``)."""

    async def resolve(self, request: web.Request):
        match = await super().resolve(request)
        if isinstance(match, MatchInfoError):
            match.route._handler = _raise_refusal
        return match


async def _raise_refusal(request: web.Request) -> web.StreamResponse:
    raise request.match_info.http_exception


def refuse_without_cycles(app: web.Application) -> web.Application:
    """``app`` with its router's refusals cycle-free (``_CycleFreeRouter``; ``web.Application(router=)``
    is deprecated, and the router adds no state, so it is the same router object, reclassed)."""
    app.router.__class__ = _CycleFreeRouter
    return app


def finished(response: web.StreamResponse, request_id: str, drain) -> web.StreamResponse:
    """``response`` as it leaves: with ``x-request-id`` unless it is already written, and
    ``Connection: close`` while the worker drains."""
    if not response.prepared:
        response.headers.setdefault("x-request-id", request_id)
        if drain.active:
            response.force_close()
    return response


def _routing_error(request: web.Request, e: web.HTTPException) -> GatewayError:
    if e.status == 405:
        allow = e.headers.get("Allow", "")
        return GatewayError(f"{request.method} is not allowed on {request.path}; use {allow}.", status=405,
                            type="invalid_request_error", code="method_not_allowed", headers={"Allow": allow})
    if e.status == 404:
        return GatewayError(f"No route for {request.method} {request.path}.", status=404,
                            type="invalid_request_error", code="unknown_url")
    return GatewayError(e.reason or "Bad request.", status=e.status, type="invalid_request_error")
