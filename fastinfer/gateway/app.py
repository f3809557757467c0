"""The aiohttp application: routes, request bodies in, engine results out.

The gateway is the listener side: it reads and validates the client's
request, hands a ``GatewayRequest`` to the engine, and writes the
``EngineResult`` back (a body, or a stream written chunk by chunk as the
engine yields it). It knows nothing of replicas or providers.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time

import orjson
from aiohttp import web

from ..engine import Engine, EngineResult
from ..engine.state import is_ready
from ..errors import BadRequest, BodyTooLarge, GatewayError
from .admin import AdminApi
from .drain import GatewayDrain, ShuttingDown
from .errors import JSON, error_response
from .anthropic_api import messages_request
from .openai_api import chat_request, passthrough_request

_REQUEST_ID_MAX = 128
_CLIENT_CLOSED = 499   # the client went away before its answer was complete (nginx's code)
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
        self._id_prefix = os.urandom(6).hex()
        self._id_counter = itertools.count(1)
        self._models_body = orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": int(time.time()), "owned_by": d.config.provider}
            for name, d in engine.deployments.items()]})

    def app(self, *, operator_routes: bool = True) -> web.Application:
        """The public listener's app; ``operator_routes=False`` when a separate admin listener has them."""
        # client_max_size is a backstop; the handler checks the limit itself to answer in the API's shape
        app = web.Application(client_max_size=self.max_body_bytes + 1, handler_args={})
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        self._add_probe_routes(app)
        if operator_routes:
            self._add_operator_routes(app)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def operator_app(self) -> web.Application:
        """The admin listener's app (``server.admin_port``): metrics, admin API, dashboard, health."""
        app = web.Application(client_max_size=1 << 20)
        self._add_probe_routes(app)
        self._add_operator_routes(app)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def _add_probe_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._counted("healthz", self.healthz))
        app.router.add_get("/readyz", self._counted("readyz", self.readyz))

    def _add_operator_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self._counted("metrics", self.metrics))
        self.admin.register(app, counted=self._counted)

    def _counted(self, route: str, handler):
        """``handler`` with each answer counted in ``fastinfer_operator_requests_total{route}``:
        probes, scrapes and the operator's calls are not client traffic."""
        metrics = self.engine.metrics
        if metrics is None:
            return handler

        async def counted(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                metrics.operator_request(route, e.status)
                raise
            metrics.operator_request(route, response.status)
            return response
        return counted

    # --------------------------------------------------------------- helpers

    def _request_id(self, request: web.Request) -> str:
        given = request.headers.get("x-request-id")
        if given and len(given) <= _REQUEST_ID_MAX and given.isprintable():
            return given
        return f"{self._id_prefix}-{next(self._id_counter)}"

    async def _read_json(self, request: web.Request):
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise BodyTooLarge(f"Request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes.")
        try:
            async with asyncio.timeout(self.body_timeout_s):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"Request body exceeds the limit of {self.max_body_bytes} bytes.") from None
        except TimeoutError:
            raise GatewayError("The request body did not arrive in time.", status=408,
                               type="invalid_request_error", code="request_timeout") from None
        if len(raw) > self.max_body_bytes:
            raise BodyTooLarge(f"Request body exceeds the limit of {self.max_body_bytes} bytes.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"The request body is not valid JSON: {e}") from None

    # --------------------------------------------------------------- routes

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat_request, "openai")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, messages_request, "anthropic")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, _passthrough("completions"), "openai")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, _passthrough("embeddings"), "openai")

    async def _serve(self, request: web.Request, parse, api: str) -> web.StreamResponse:
        """One data route, in flight for the drain's ``cut`` until it is answered."""
        in_flight = self.drain.in_flight
        key = id(request)
        in_flight[key] = request
        try:
            response = await self._answer(request, parse, api)
        finally:
            del in_flight[key]
        return self.drain.closing(response) if self.drain.active else response

    async def _answer(self, request: web.Request, parse, api: str) -> web.StreamResponse:
        """``parse`` validates the body into a request; errors in ``api``'s shape."""
        now = self._loop.time()
        request_id = self._request_id(request)
        req = None
        try:
            req = parse(await self._read_json(request), request.headers, request_id, now)
            if req.endpoint != "chat" and req.endpoint not in self.engine.deployment(req.model).provider.endpoints:
                raise BadRequest(f"The model `{req.model}` does not serve /v1/{req.endpoint}.", param="model")
            timeout_ms = request.headers.get("x-timeout-ms")
            if timeout_ms is not None:
                req.deadline = now + _parse_timeout_ms(timeout_ms)
            result = await self.engine.chat(req)
        except GatewayError as e:
            self._account(req.model if req is not None else None, e.status, now)
            return error_response(e, api, request_id)
        except asyncio.CancelledError:
            if not self.drain.cut_short():
                self._account(req.model if req is not None else None, _CLIENT_CLOSED, now)
                raise
            err = ShuttingDown()
            self._account(req.model if req is not None else None, err.status, now)
            return error_response(err, api, request_id)
        except Exception:
            log.exception("request %s failed inside the gateway", request_id)
            return error_response(GatewayError("Internal gateway error."), api, request_id)
        try:
            response = await self._respond(request, result, request_id, now)
        except asyncio.CancelledError:
            self._account(req.model, _CLIENT_CLOSED, now, result)
            raise
        self._account(req.model, result.status, now, result)
        return response

    def _account(self, deployment: str | None, status: int, received_at: float,
                 result: EngineResult | None = None) -> None:
        """Count the request once it is answered: code, duration, gateway overhead."""
        metrics = self.engine.metrics
        if metrics is None:
            return
        name = deployment or ""
        metrics.request(name, status)
        duration = self._loop.time() - received_at
        metrics.observe("request_duration_seconds", name, duration)
        if result is not None:
            metrics.observe("overhead_seconds", name, result.overhead_s)
            if result.ttft_s is not None:
                metrics.observe("ttft_seconds", name, result.ttft_s)

    async def _respond(self, request: web.Request, result: EngineResult, request_id: str,
                       received_at: float) -> web.StreamResponse:
        loop = self._loop
        result.overhead_s = max(0.0, loop.time() - received_at - result.upstream_s)
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
        response = self.drain.closing(web.StreamResponse(status=result.status, headers=headers))
        try:
            await response.prepare(request)
            client = _ClientStream(request.writer, request.transport)
            result.ttft_s = loop.time() - received_at
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
        finally:
            result.stream.close()
        return response

    async def models(self, request: web.Request) -> web.Response:
        self._count_unrouted(200)
        return web.Response(body=self._models_body, content_type=JSON,
                            headers={"x-request-id": self._request_id(request)})

    async def not_found(self, request: web.Request) -> web.Response:
        err = GatewayError(f"No route for {request.method} {request.path}.", status=404,
                           type="invalid_request_error", code="unknown_url")
        self._count_unrouted(err.status)
        return error_response(err, "openai", self._request_id(request))

    def _count_unrouted(self, status: int) -> None:
        """A client API answer that concerns no deployment (``deployment=""``)."""
        if self.engine.metrics is not None:
            self.engine.metrics.request("", status)

    async def metrics(self, request: web.Request) -> web.Response:
        if self.engine.metrics is None:
            return web.Response(status=404)
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


def _passthrough(endpoint: str):
    def parse(body, headers, request_id: str, now: float):
        return passthrough_request(body, headers, request_id, now, endpoint)
    return parse


def _parse_timeout_ms(value: str) -> float:
    try:
        ms = int(value)
    except ValueError:
        ms = -1
    if ms <= 0:
        raise BadRequest(f"x-timeout-ms must be a positive integer of milliseconds; got {value!r}",
                         param="x-timeout-ms")
    return ms / 1000


class _ClientStream:
    """The client side of a relayed stream: synchronous writes straight to the socket.

    aiohttp's ``response.write`` is a coroutine per chunk; a relayed chunk is
    written from the upstream's ``data_received`` instead, framed here.
    """

    __slots__ = ("writer", "transport", "chunked")
    HIGH_WATER = 256 * 1024

    def __init__(self, writer, transport):
        self.writer = writer
        self.transport = transport
        self.chunked = writer.chunked
        writer.send_headers()

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return True  # the client is gone; aiohttp cancels the handler, which stops the pump
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        return transport.get_write_buffer_size() <= self.HIGH_WATER

    async def drain(self) -> None:
        await self.writer.drain()
