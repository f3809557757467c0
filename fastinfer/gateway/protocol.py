"""The connection side of the gateway's listeners: what reaches a handler, and how directly.

Two jobs, both on aiohttp's low-level server (``web.Server``) under the app:
- answers to what aiohttp refuses before any middleware runs: a malformed request line, a
  bad ``Content-Length``, an oversized header. aiohttp's own answer is plain text without
  ``x-request-id``; these go out in the caller's error shape with a request id, like every
  other. The request line may never have been read, so the path (and with it the caller's
  API) is known only when aiohttp parsed it; otherwise the answer takes the OpenAI shape, as
  every path but ``/v1/messages`` does;
- the direct path: a request whose method and raw path match one of the app's
  ``DIRECT_ROUTES`` exactly (the data routes) goes straight to its handler, skipping the
  Application's router, its middleware chain and its per-request match info; every other
  request (a query string, a trailing slash, a 404 or 405, an ``Expect`` header, the admin
  and dashboard routes) goes through the full Application, router and middleware as before.
  A direct route's handler renders its own errors as the gateway's error middleware does
  (``middleware.error_answer``), so its answers are the same.

Owns: ``EdgeAppRunner`` (an ``AppRunner`` whose server makes ``EdgeRequestHandler``
connections and dispatches the direct routes), ``EdgeRequestHandler.handle_error`` (a body coding
it cannot read, ``br`` or ``zstd``, is a 415 there),
``DIRECT_ROUTES``. Must not touch: what the handlers do.
"""
from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestHandler

from .._core import client
from ..errors import GatewayError
from ..observe import RateLimitedLog
from ..redact import redact
from .answer import written_response
from .errors import error_response
from .middleware import RequestIds, api_of

log = logging.getLogger("fastinfer.gateway")
_MAX_REASON = 200
# one warning line per malformed request, without the client's bytes, within a budget of its own
MALFORMED_REQUESTS = RateLimitedLog(log, level=logging.WARNING, what="malformed request lines")
_QUOTED_BYTES = re.compile(r":\s*(?:bytearray\()?b['\"].*$")   # aiohttp's message quotes the client's bytes
# the app's direct routes: (method, raw path) -> a handler that renders its own errors (the middleware's job)
DIRECT_ROUTES = web.AppKey("fastinfer.direct_routes", dict)
DIRECT_BODY_LIMIT = web.AppKey("fastinfer.direct_body_limit", int)   # server.max_body_bytes
SERVED_CODINGS = "gzip, deflate"     # the request body codings read without an optional package


class EdgeRequestHandler(RequestHandler):
    """aiohttp's connection protocol, with its error answers in the gateway's shape."""

    ids = RequestIds()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:       # an answer has started: aiohttp only drops the connection
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            error = GatewayError("Internal gateway error.", status=status)
        elif isinstance(exc, ContentEncodingError):
            # a coding aiohttp decodes only with an optional package (br, zstd): the client's choice,
            # not malformed bytes; its answer names what is served rather than what to install
            error = GatewayError("The request's Content-Encoding is not supported: send the body "
                                 "uncompressed, gzip or deflate.", status=415, type="invalid_request_error",
                                 code="unsupported_content_encoding", headers={"Accept-Encoding": SERVED_CODINGS})
        else:
            # a client's malformed bytes are the client's problem: one line, never a traceback
            reason = _reason(message)
            MALFORMED_REQUESTS.log(f"refused a malformed HTTP request from {request.remote} "
                                   f"(answered {status}): {reason}")
            error = GatewayError(f"Malformed HTTP request: {reason}", status=status, type="invalid_request_error")
        refused = getattr(self._manager, "on_refused", None)
        if refused is not None:
            refused(status)          # counted like every other answer (fastinfer_requests_total)
        response = error_response(error, api_of(request.path), self.ids.of(request))
        response.force_close()    # the parser cannot find the next request's start after bad bytes
        return response


def _reason(message: str | None) -> str:
    """What aiohttp found wrong, without the client's bytes it quotes (the lines after the first,
    or ``: b'...'`` at the end of it): redacted and short."""
    first = (message or "").strip().split("\n", 1)[0]
    first = _QUOTED_BYTES.sub("", first).rstrip(":. ").strip()
    return redact(first[:_MAX_REASON]) or "bad request"


class _EdgeServer(web.Server):
    """Makes each connection: a ``DirectConnection`` (``_core.client``) where the app has direct
    routes (it hands anything else to an ``EdgeRequestHandler``), else an ``EdgeRequestHandler``."""

    core = client       # the module the direct connections come from: the tests swap in its reference
    direct_routes: dict = {}
    max_body_bytes = 0
    on_refused = None

    @staticmethod
    def draining() -> bool:      # GatewayDrain.watch replaces it
        return False

    def __call__(self):
        if self.direct_routes:
            return self.core.DirectConnection(
                self, self.direct_routes, self.aiohttp_handler, written_response, loop=self._loop,
                max_body_bytes=self.max_body_bytes, keepalive_timeout=self._kwargs.get("keepalive_timeout", 75.0),
                draining=self.draining)
        return self.aiohttp_handler()

    def aiohttp_handler(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


def direct_dispatch(app: web.Application):
    """The server's request handler: an exact match of the app's ``DIRECT_ROUTES`` to its
    handler, anything else to the app (router, middleware). A data request so skips the
    router's resolve, the match info it builds and freezes, the middleware chain's wrappers
    and the app's ``get_event_loop`` (a ``getpid`` syscall per request on Python 3.11)."""
    full = app._handle
    routes = app.get(DIRECT_ROUTES)
    if not routes:
        return full

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        route = routes.get((request.method, request.raw_path))
        # 100-continue is the app's to answer (its expect handler); rare, so it takes the long way
        if route is None or "Expect" in request.headers:
            return await full(request)
        return await route(request)
    return dispatch


class EdgeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors with ``EdgeRequestHandler``
    and whose server dispatches the app's ``DIRECT_ROUTES`` itself; ``on_refused(status)`` is
    told of each protocol error answer (the metrics count it)."""

    def __init__(self, app: web.Application, *, on_refused=None, **kwargs):
        # an answer given before its body arrived waits for the rest as long on aiohttp's path as on the direct one
        kwargs.setdefault("lingering_time", client.LINGER_S)
        super().__init__(app, **kwargs)
        self._on_refused = on_refused

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EdgeServer     # the same object, built by aiohttp with all its settings
        server.on_refused = self._on_refused
        server.request_handler = direct_dispatch(self.app)   # each connection reads it when made
        routes = self.app.get(DIRECT_ROUTES) or {}
        server.direct_routes = {path: handler for (method, path), handler in routes.items() if method == "POST"}
        server.max_body_bytes = self.app.get(DIRECT_BODY_LIMIT, 0)
        return server
