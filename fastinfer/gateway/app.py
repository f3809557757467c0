"""The aiohttp application: routes, request bodies in, engine results out.

The gateway is the listener side: it reads and validates the client's
request, hands a ``GatewayRequest`` to the engine, and writes the
``EngineResult`` back (a body, or a stream written chunk by chunk as the
engine yields it). It knows nothing of replicas or providers.
"""
from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web

from ..engine import Engine, EngineResult, clock
from ..engine.state import is_ready
from ..routing import session_id_problem
from ..errors import BadRequest, GatewayError
from .admin import AdminApi
from .anthropic_api import messages_request
from .auth import KeyRing
from .body import read_json
from .drain import GatewayDrain, ShuttingDown
from .errors import JSON
from .middleware import DATA_ROUTE, OPERATOR_ROUTE, REQUEST_ID, RateLimitedLog, RequestIds, error_middleware
from .openai_api import chat_request, passthrough_request

_CLIENT_CLOSED = 499   # the client went away before its answer was complete (nginx's code)
_TIMEOUT_MS_MAX = 2**31 - 1
log = logging.getLogger("fastinfer.gateway")


class Gateway:
    def __init__(self, engine: Engine, *, max_body_bytes: int, body_timeout_s: float,
                 admin_key: str | None = None, admin_throttle=None):
        self.engine = engine
        self.admin = AdminApi(engine, admin_key, admin_throttle)
        # built inside the worker's loop; on Python 3.11 every get_running_loop() is a getpid() syscall
        self._loop = asyncio.get_running_loop()
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.drain = GatewayDrain(self._loop)    # driven by the worker's drain (process.drain)
        self.internal_errors = RateLimitedLog(log, self._loop)
        # one middleware instance (one request-id sequence) for the public and the admin listener
        self._error_middleware = error_middleware(RequestIds(), self.internal_errors, self._count_error,
                                                  self.drain)
        created = int(time.time())
        self._models_body = orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": d.config.provider}
            for d in engine.deployments.values() for name in (d.config.name, *d.config.aliases)]})
        # gateway keys: with any configured, every data route needs one (None: an open gateway)
        self.keys = KeyRing(engine.config) if engine.config.keys else None

    def app(self, *, operator_routes: bool = True) -> web.Application:
        """The public listener's app; ``operator_routes=False`` when a separate admin listener has them."""
        # client_max_size is a backstop; the handler checks the limit itself to answer in the API's shape
        app = web.Application(client_max_size=self.max_body_bytes + 1, handler_args={},
                              middlewares=[self._error_middleware])
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_delete("/v1/sessions/{session_id}", self.end_session)
        self._add_probe_routes(app)
        if operator_routes:
            self._add_operator_routes(app)   # unknown paths are the router's 404, wrong methods its 405
        return app

    def operator_app(self) -> web.Application:
        """The admin listener's app (``server.admin_port``): metrics, admin API, dashboard, health."""
        app = web.Application(client_max_size=1 << 20, middlewares=[self._error_middleware])
        self._add_probe_routes(app)
        self._add_operator_routes(app)
        return app

    def _add_probe_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._counted("healthz", self.healthz))
        app.router.add_get("/readyz", self._counted("readyz", self.readyz))

    def _add_operator_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self._counted("metrics", self.metrics))
        self.admin.register(app, counted=self._counted)

    def _counted(self, route: str, handler):
        """``handler`` with each answer counted in ``fastinfer_operator_requests_total{route}``:
        probes, scrapes and the operator's calls are not client traffic. (An error it raises is
        counted here too; ``OPERATOR_ROUTE`` tells the middleware's accounting to leave it.)"""
        metrics = self.engine.metrics

        async def counted(request: web.Request) -> web.StreamResponse:
            request[OPERATOR_ROUTE] = route
            try:
                response = await handler(request)
            except (web.HTTPException, GatewayError) as e:
                metrics.operator_request(route, e.status)
                raise
            except Exception:
                metrics.operator_request(route, 500)
                raise
            metrics.operator_request(route, response.status)
            return response
        return counted

    # --------------------------------------------------------------- routes

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat_request)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, messages_request)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, _passthrough("completions"))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, _passthrough("embeddings"))

    async def _serve(self, request: web.Request, parse) -> web.StreamResponse:
        """One data route, in flight for the drain's ``cut`` until it is answered."""
        in_flight = self.drain.in_flight
        key = id(request)
        in_flight[key] = request
        try:
            return await self._answer(request, parse)
        finally:
            del in_flight[key]

    async def _answer(self, request: web.Request, parse) -> web.StreamResponse:
        """``parse`` checks the body into a request. Errors are raised: the middleware renders
        them in the route's API shape and counts them (``_count_error``)."""
        started = clock()   # the overhead clock (µs); now, on the loop's clock, is for the deadline
        now = self._loop.time()
        request_id = request[REQUEST_ID]
        request[DATA_ROUTE] = route = [None, started, None]     # the deployment and the key, once known
        try:
            key = None
            if self.keys is not None:
                key = self.keys.authenticate(request.headers)    # before the body is read
                route[2] = key.name
            timeout_ms = request.headers.get("x-timeout-ms")
            deadline = None if timeout_ms is None else now + _parse_timeout_ms(timeout_ms)
            body = await read_json(request, self.max_body_bytes, self.body_timeout_s)
            asked_priority = key is not None and _asks_priority(request.headers, body)
            req = parse(body, request.headers, request_id, now)
            route[0] = req.model
            if key is not None:
                # before the 404: a model outside the key's globs is 403 whether or not it exists
                found = self.engine.find(req.model)
                key.check_model(req.model, found.config.name if found is not None else None)
            dep = self.engine.deployment(req.model)   # a name, an alias, or PROVIDER/<model>; else 404
            route[0] = dep.config.name
            if key is not None:
                req.key = key.name
                req.priority = key.priority_of(req.priority if asked_priority else None)
            if req.endpoint != "chat" and req.endpoint not in dep.provider.endpoints:
                raise BadRequest(f"The model `{req.model}` does not serve /v1/{req.endpoint}.", param="model")
            req.deadline = deadline
            result = await self.engine.chat(req)
        except asyncio.CancelledError:
            if self.drain.cut_short():
                raise ShuttingDown() from None   # the drain's grace period is over: a 503 (middleware)
            self._account(route[0], _CLIENT_CLOSED, started, key=route[2])
            raise
        try:
            response = await self._respond(request, result, request_id, started)
        except asyncio.CancelledError:
            self._account(route[0], _CLIENT_CLOSED, started, result, req.key)
            raise
        self._account(route[0], result.status, started, result, req.key)
        return response

    def _count_error(self, request: web.Request, status: int) -> None:
        """An error answer, counted: a data route's under its deployment; an unknown path's, a
        wrong method's or another client route's under ``deployment=""``. The operator's routes
        count their own (``_counted``)."""
        route = request.get(DATA_ROUTE)
        if route is not None:
            self._account(route[0], status, route[1], key=route[2])
        elif OPERATOR_ROUTE not in request:
            self._account(None, status, None)

    def _account(self, deployment: str | None, status: int, received_at: float | None,
                 result: EngineResult | None = None, key: str | None = None) -> None:
        """Count the request once it is answered: code (per deployment and per gateway key),
        duration, gateway overhead."""
        metrics = self.engine.metrics
        name = deployment or ""
        metrics.request(name, status)
        if key is not None:
            metrics.key_request(key, status)
        if received_at is None:
            return
        duration = clock() - received_at
        metrics.observe("request_duration_seconds", name, duration)
        if result is not None:
            metrics.observe("overhead_seconds", name, result.overhead_s)
            if result.ttft_s is not None:
                metrics.observe("ttft_seconds", name, result.ttft_s)

    async def _respond(self, request: web.Request, result: EngineResult, request_id: str,
                       received_at: float) -> web.StreamResponse:
        result.overhead_s = max(0.0, clock() - received_at - result.upstream_s)
        headers = {
            "x-request-id": request_id,
            "x-fastinfer-replica": result.replica or "",
            "x-fastinfer-attempts": str(result.attempts),
            "x-fastinfer-overhead-ms": f"{result.overhead_s * 1000:.3f}",
            **result.headers,
        }
        if result.stream is None:
            return web.Response(status=result.status, body=result.body, content_type=JSON, headers=headers)
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        response = self.drain.closing(_RelayedResponse(status=result.status, headers=headers))
        try:
            await response.prepare(request)
            client = _ClientStream(request.writer, request.transport)
            result.ttft_s = clock() - received_at
            try:
                await result.stream.pump(client)
            except asyncio.CancelledError:
                if not self.drain.cut_short():
                    raise
                # the drain's grace period ended mid-stream: end it as a failed stream, never as a
                # finished one (the upstream is already aborted: pump closed the stream)
                client.write(result.stream.relay.error_event(ShuttingDown()))
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client left; closing the stream closes the upstream
        except Exception as e:
            # the head went out: no error answer is possible any more. Cut the connection so the
            # stream cannot look finished, and count and log it like any internal error.
            self.internal_errors.exception(f"request {request_id}: stream failed inside the gateway", e)
            result.status = 500
            if request.transport is not None:
                request.transport.close()
        finally:
            result.stream.close()
        return response

    async def end_session(self, request: web.Request) -> web.Response:
        """``DELETE /v1/sessions/{id}``: end a sticky session now (its backend session closed), in
        every deployment it is bound in, within the caller's gateway key's namespace."""
        session_id = request.match_info["session_id"]
        problem = session_id_problem(session_id)
        if problem is not None:
            raise BadRequest(f"The session id {problem}.", param="session_id")
        ended = await self.engine.end_session(self._key_name(request), session_id)
        if not ended:
            raise GatewayError(f"No live session {session_id!r}.", status=404, type="invalid_request_error",
                               code="session_not_found")
        return web.Response(body=orjson.dumps({"id": session_id, "object": "session", "deleted": True,
                                               "deployments": ended}), content_type=JSON)

    def _key_name(self, request: web.Request) -> str:
        """The name of the gateway key ``request`` authenticates with, "" on an open gateway: the
        namespace of its sessions. Key authentication (``self.keys``, issue 8) answers it, and
        refuses a request without a valid key as it does on every data route."""
        keys = getattr(self, "keys", None)
        return keys.authenticate(request.headers).name if keys is not None else ""

    async def models(self, request: web.Request) -> web.Response:
        body = self._models_body
        if self.keys is not None:
            body = self.keys.authenticate(request.headers).models_body
        self.engine.metrics.request("", 200)     # a client API answer that concerns no deployment
        return web.Response(body=body, content_type=JSON)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.engine.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    async def readyz(self, request: web.Request) -> web.Response:
        if self.drain.stopping:
            return web.Response(status=503, body=b'{"status":"draining"}', content_type=JSON)
        if not is_ready(self.engine):
            return web.Response(status=503, body=b'{"status":"all circuits of a deployment are open"}',
                                content_type=JSON)
        return web.Response(body=b'{"status":"ready"}', content_type=JSON)


def _asks_priority(headers, body) -> bool:
    """Did the client name a priority (``x-priority`` or the body's ``priority``)? If not, its key's applies."""
    return headers.get("x-priority") is not None or (type(body) is dict and body.get("priority") is not None)


def _passthrough(endpoint: str):
    def parse(body, headers, request_id: str, now: float):
        return passthrough_request(body, headers, request_id, now, endpoint)
    return parse


def _parse_timeout_ms(value: str) -> float:
    """The contract's ``x-timeout-ms``: an ASCII integer from 1 to 2^31-1 milliseconds, in seconds."""
    if not (value.isascii() and value.isdigit() and len(value) <= 10 and 1 <= int(value) <= _TIMEOUT_MS_MAX):
        shown = value if len(value) <= 24 else value[:21] + "..."
        raise BadRequest(f"x-timeout-ms must be an integer from 1 to {_TIMEOUT_MS_MAX} (milliseconds); "
                         f"got {shown!r}", param="x-timeout-ms")
    return int(value) / 1000


class _RelayedResponse(web.StreamResponse):
    """A stream's response: ``prepare`` keeps the head in aiohttp's writer, and it goes out with the
    stream's first bytes in one send (or with the end, for a stream that sends nothing)."""

    _send_headers_immediately = False


class _ClientStream:
    """The client side of a relayed stream: synchronous writes straight to the socket.

    aiohttp's ``response.write`` is a coroutine per chunk; a relayed chunk is
    written from the upstream's ``data_received`` instead, framed here. The
    first one goes through the writer's own path that sends the head with it.
    """

    __slots__ = ("writer", "transport", "chunked", "head_pending")
    HIGH_WATER = 256 * 1024

    def __init__(self, writer, transport):
        self.writer = writer
        self.transport = transport
        self.chunked = writer.chunked
        # the head still waits in the writer (an aiohttp that sends it in prepare leaves nothing here)
        self.head_pending = bool(getattr(writer, "_headers_buf", None))

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return True  # the client is gone; aiohttp cancels the handler, which stops the pump
        if self.head_pending:
            self.head_pending = False
            self.writer._send_headers_with_payload(data, False)
        else:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        return transport.get_write_buffer_size() <= self.HIGH_WATER

    async def drain(self) -> None:
        await self.writer.drain()
