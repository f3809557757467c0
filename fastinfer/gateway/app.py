"""The aiohttp application: routes, request bodies in, engine results out.

The gateway is the listener side: it reads and validates the client's
request, hands a ``GatewayRequest`` to the engine, and writes the
``EngineResult`` back (a body, or a stream written chunk by chunk as the
engine yields it). When a request is answered (a stream: when it ends) it
counts it and tells ``observe`` (the access log, the request's trace) in one
place, ``_answered``. It knows nothing of replicas or providers.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.web_urldispatcher import _default_expect_handler

from .._core.access import CLIENT_CLOSED as _CLIENT_CLOSED, error_text
from .._core.client import ClientStream, DirectRequest
from .._core.slotted import record_maker
from ..engine import Deployment, Engine, EngineResult, GatewayRequest, clock
from ..engine.state import is_ready
from ..routing import session_id_problem
from ..errors import BadRequest, BodyNotRead, GatewayError, MetricsHandedOver
from ..formats.common import counted_input_tokens
from ..observe import AccessLog, RequestTrace, Tracing, log_bug
from .admin import AdminApi
from .answer import leading_headers, new_written_answer, stream_head, write_json
from .anthropic_api import count_tokens_request, messages_request
from .auth import key_ring
from .body import NOT_ARRIVED, arrived_json, read_json
from .drain import GatewayDrain, ShuttingDown
from .errors import JSON
from .middleware import (DATA_ROUTE, OPERATOR_ROUTE, REQUEST_ID, RequestIds, error_answer, error_middleware,
                         finished, refuse_without_cycles)
from .openai_api import chat_request, passthrough_request
from .protocol import DIRECT_BODY_LIMIT, DIRECT_ROUTES

_TIMEOUT_MS_MAX = 2**31 - 1
# the fields a data answer leads with: its request id, the replica and the attempts that answered
# it, the gateway's own time in milliseconds (``_serve``; the engine's headers never repeat them)
_ANSWER_FIELDS = (b"x-request-id: ", b"x-fastinfer-replica: ", b"x-fastinfer-attempts: ",
                  b"x-fastinfer-overhead-ms: ")
log = logging.getLogger("fastinfer.gateway")


@dataclass(slots=True, eq=False)     # compared and hashed by identity, as a plain class is
class DataRequest:
    """What the gateway knows of a data request as it goes, read once when it is answered."""

    received_at: float                  # ``clock()``
    trace: RequestTrace | None
    # the model the client named, once read; the deployment's own name once resolved (an alias's too)
    deployment: str | None = None
    series: Any = None                  # the deployment's metrics series, once resolved
    key: str | None = None              # the gateway key's name, once authenticated (never the key)
    key_series: Any = None              # then the key's metrics series (None: not counted)
    req: GatewayRequest | None = None
    result: EngineResult | None = None
    cut: GatewayError | None = None     # why the gateway ended its stream early (a drain's end)


# ``DataRequest(received_at, trace)`` on every data request, without the dataclass's ``__init__`` (``_core.slotted``)
new_data_request = record_maker(DataRequest)


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
        config = engine.config
        # one middleware instance (one request-id sequence) for the public and the admin listener
        self._ids = RequestIds()
        self.access_log = (AccessLog(self._loop, engine.deployments, self._ids.prefix)
                           if config.logging.access_log else None)
        # a data request's line, kept by one compiled call (``_core.access``); None: no access log
        self._access_answered = None if self.access_log is None else self.access_log.answered
        telemetry = config.telemetry
        self.tracing = None if telemetry is None else Tracing(telemetry.otlp_endpoint, telemetry.service_name,
                                                              telemetry.sample_ratio)
        self._error_middleware = error_middleware(self._ids, self._error_answered, self.drain)
        created = int(time.time())
        self._models_body = orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": d.config.provider}
            for d in engine.deployments.values() for name in (d.config.name, *d.config.aliases)]})
        # gateway keys: with any configured, every data route needs one (None: an open gateway)
        self.keys = key_ring(engine.config) if engine.config.keys else None
        for key in self.keys.keys if self.keys is not None else ():
            key.counted_in(engine.metrics.key_series(key.name))     # a keyed answer is counted into it directly

    def app(self, *, operator_routes: bool = True) -> web.Application:
        """The public listener's app; ``operator_routes=False`` when a separate admin listener has them."""
        # client_max_size is a backstop; the handler checks the limit itself to answer in the API's shape
        app = refuse_without_cycles(web.Application(client_max_size=self.max_body_bytes + 1, handler_args={},
                                                    middlewares=[self._error_middleware]))
        # the data routes: in the router too (a query string or an Expect header takes the long way)
        direct = app[DIRECT_ROUTES] = {}
        app[DIRECT_BODY_LIMIT] = self.max_body_bytes
        for path, parse in _DATA_ROUTES:
            # the handler is _serve itself, not a method awaiting it: one coroutine less a request
            # positional: a partial with keywords makes a dict of them on every call
            handler = functools.partial(self._serve, parse)
            app.router.add_post(path, handler, expect_handler=self._continue_unless_too_large)
            direct[("POST", path)] = handler     # it renders its own errors, as the middleware would
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_delete("/v1/sessions/{session_id}", self.end_session)
        self._add_probe_routes(app)
        if operator_routes:
            self._add_operator_routes(app)   # unknown paths are the router's 404, wrong methods its 405
        app.on_cleanup.append(self._close_observers)   # the data routes are this app's: its runner ends first
        return app

    async def _continue_unless_too_large(self, request: web.Request) -> None:
        """``Expect: 100-continue`` on a data route: a body announced over the limit gets its 413
        at once (the handler refuses it from ``Content-Length``), not a 100 that asks for it."""
        expect = request.headers.get("Expect", "").lower()
        if expect != "100-continue" and request.version == HttpVersion11:
            # aiohttp's answer to an expectation it cannot meet is plain text, before the middleware
            request_id = request[REQUEST_ID] = self._ids.of(request)
            refusal = BodyNotRead("The Expect header asks for what the gateway does not do: only 100-continue "
                                  "is served.", status=417, code="expectation_failed")
            return finished(error_answer(request, refusal, request_id, self._error_answered), request_id, self.drain)
        length = request.content_length
        if expect == "100-continue" and length is not None and length > self.max_body_bytes:
            return None
        return await _default_expect_handler(request)

    def operator_app(self) -> web.Application:
        """The admin listener's app (``server.admin_port``): metrics, admin API, dashboard, health."""
        app = refuse_without_cycles(web.Application(client_max_size=1 << 20, middlewares=[self._error_middleware]))
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

    async def _serve(self, parse, request: web.Request) -> web.StreamResponse:
        """One data route: ``parse`` checks the body into a request. Its errors are rendered here as the
        middleware renders them (``middleware.error_answer``: the route's API shape, told to
        ``_error_answered``), so that the direct path can call this without the middleware (one
        coroutine less a request) and answer alike. In flight for the drain's ``cut`` until it is
        answered."""
        request_id = request.get(REQUEST_ID)
        if request_id is None:      # the direct path: no middleware gave the request its id
            request_id = request[REQUEST_ID] = self._ids.of(request)
        in_flight = self.drain.in_flight
        in_flight_key = id(request)
        in_flight[in_flight_key] = request
        try:
            started = clock()   # the overhead clock (µs); now, on the loop's clock, is for the deadline
            now = self._loop.time()
            trace = None if self.tracing is None else self.tracing.start(request.method, request.path, request.headers)
            request[DATA_ROUTE] = data = new_data_request(started, trace)
            try:
                key = None
                if self.keys is not None:
                    # before the body is read; on the direct path the connection keeps the key it
                    # presented (``_core.keys.KeyMemo``): its next requests skip the hash
                    key = self.keys.authenticate(request.headers,
                                                 request.protocol if type(request) is DirectRequest else None)
                    data.key = key.name
                    data.key_series = key.series
                timeout_ms = request.headers.get("x-timeout-ms")
                deadline = None if timeout_ms is None else now + _parse_timeout_ms(timeout_ms)
                body = arrived_json(request, self.max_body_bytes)
                if body is NOT_ARRIVED:
                    body = await read_json(request, self.max_body_bytes, self.body_timeout_s)
                req, dep = self._engine_request(request, parse, body, key, data, now)
                req.deadline = deadline
                result = data.result = await self.engine.chat(req, dep)
            except asyncio.CancelledError:
                if self.drain.cut_short():
                    raise ShuttingDown() from None   # the drain's grace period is over: a 503 (below)
                self._answered(request, data, _CLIENT_CLOSED)
                raise
            # the answer starts: the fields it leads with (``_ANSWER_FIELDS``), for the compiled head
            overhead_s = clock() - started - result.upstream_s
            if overhead_s < 0.0:        # (not ``max``: a builtin 3.11 calls through a tuple of its arguments)
                overhead_s = 0.0
            result.overhead_s = overhead_s
            # (1000.0: a float times a float is an operation 3.11 specializes, a float times an int is not)
            values = (request_id, result.replica or "", result.attempts, overhead_s * 1000.0)
            keep_alive = request.keep_alive and not self.drain.active
            if self.drain.shed_left and keep_alive:     # this worker holds more than its share
                self.drain.let_one_go()
                keep_alive = False
            if result.stream is None:      # a whole answer: written at once (aiohttp writes an HTTP/1.0 one's)
                response = (write_json(request, result.status, result.headers, result.body, keep_alive,
                                       _ANSWER_FIELDS, values, result.rate_fields)
                            or web.Response(status=result.status, body=result.body, content_type=JSON,
                                            headers=leading_headers(_ANSWER_FIELDS, values, result.headers,
                                                                    result.rate_fields)))
            else:
                try:
                    response = await self._respond_stream(request, data, values, keep_alive)
                except asyncio.CancelledError:
                    # the client left: before its answer was complete, unless it had its whole stream
                    self._answered(request, data, result.status if result.stream.delivered else _CLIENT_CLOSED)
                    raise
            self._answered(request, data, result.status)
        except Exception as e:
            response = error_answer(request, e, request_id, self._error_answered)
        finally:
            del in_flight[in_flight_key]
        # an answer written here (the direct path's) has nothing left to finish: one call less a request
        return response if response.prepared else finished(response, request_id, self.drain)

    def _engine_request(self, request: web.Request, parse, body, key, data: DataRequest,
                        now: float) -> tuple[GatewayRequest, Deployment]:
        """The body checked into the engine's request (``parse``), for a deployment that exists, that
        the key may use and that serves the route, in the key's priority; kept on ``data`` for the
        accounting. Returned with that deployment (the engine need not look the name up again).
        (Not a coroutine: it awaits nothing, and a coroutine level costs every request.)"""
        try:
            req = parse(body, request.headers, request[REQUEST_ID], now, key)     # in the key's priority
        except GatewayError:
            self._count_under_named_deployment(data, body)
            raise
        data.req = req
        data.deployment = req.model
        req.trace = data.trace
        dep = self.engine.find(req.model)         # a name, an alias, or PROVIDER/<model>
        if key is not None:
            # before the 404: a model outside the key's globs is 403 whether or not it exists
            key.admit(req, dep.config.name if dep is not None else None)
        if dep is None:
            dep = self.engine.deployment(req.model)   # raises the 404
        data.deployment = dep.config.name
        data.series = dep.series
        if req.endpoint in _FORWARDED_ONLY and req.endpoint not in dep.provider.endpoints:
            raise BadRequest(f"The model `{req.model}` does not serve /v1/{req.endpoint}.", param="model")
        return req, dep

    def _count_under_named_deployment(self, data: DataRequest, body) -> None:
        """A body refused by its checks (a 400) is counted and logged under the deployment its
        ``model`` names, when one exists (not ``deployment=""``): a deployment's client errors are
        its own. A route counted apart (``count_tokens``) has set its series already."""
        model = body.get("model") if isinstance(body, dict) else None
        dep = self.engine.owner(model) if isinstance(model, str) else None
        if dep is not None:
            data.deployment = dep.config.name
            if data.series is None:
                data.series = dep.series

    def _error_answered(self, request: web.Request, status: int, error: GatewayError) -> None:
        """An error answer from the middleware: every one of a data route; of any other route,
        access-logged whatever it is (a 404 for an unknown path, a refused admin key) and counted
        under ``deployment=""``, unless it is an operator route's (those count their own: ``_counted``)."""
        data = request.get(DATA_ROUTE)
        if data is not None:
            self._answered(request, data, status, error)
            return
        if OPERATOR_ROUTE not in request:
            self.engine.metrics.request("", status)
        if self.access_log is not None:
            # the values in ``access.FIELDS``' order: request_id, key, deployment, fallback, replica, status,
            # attempts, stream, duration, ttft, overhead, prompt and completion tokens, cost, error, method, path
            self.access_log.add(time.time(), (
                self._ids.shown(request[REQUEST_ID]), None, None, None, None, status, 0, False, None, None, None,
                None, None, None, error.message, request.method, request.path))

    def _answered(self, request: web.Request, data: DataRequest, status: int,
                  error: GatewayError | None = None) -> None:
        """A data request is answered (a stream: it has ended): counted (code, duration, gateway
        overhead, time to first byte), access-logged, its trace ended. Once per request."""
        metrics = self.engine.metrics
        duration = clock() - data.received_at
        result = data.result
        series = data.series if data.series is not None else metrics.series(data.deployment or "")
        if result is None:      # refused before the engine answered: no overhead, no first byte
            series.answered(status, duration, None, None)
        else:
            series.answered(status, duration, result.overhead_s, result.ttft_s)
        if data.key_series is not None:
            data.key_series.request(status)
        access_answered = self._access_answered     # read once: ``self._access_answered(...)`` is unspecialized
        if access_answered is not None:
            access_answered(time.time() - duration, request[REQUEST_ID], data, status, error, duration,
                            request.method, request.path)
        if data.trace is not None:
            self._end_trace(request[REQUEST_ID], data, status, error)

    def _end_trace(self, request_id: str, data: DataRequest, status: int, error: GatewayError | None) -> None:
        """The request's span ends with what its access line says (``_core.access``)."""
        req = data.req
        if req is None:
            usage = cost = None
            attempts, stream = 0, False
        else:
            usage, cost, attempts, stream = req.usage, req.cost_usd, req.attempts, req.stream
        data.trace.end(status, self._ids.shown(request_id), data.key, data.deployment, attempts, stream, usage, cost,
                       error_text(data, status, error))

    async def _close_observers(self, app: web.Application) -> None:
        """The worker is draining: write the access lines kept, export the spans pending."""
        if self.access_log is not None:
            self.access_log.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)

    async def _respond_stream(self, request: web.Request, data: DataRequest, values: tuple,
                              keep_alive: bool) -> web.StreamResponse:
        """A relayed stream, pumped to its end (or the client's, or the drain's)."""
        result = data.result
        request_id = values[0]
        try:
            head = stream_head(request, result.status, result.headers, keep_alive, _ANSWER_FIELDS, values,
                               result.rate_fields)
            if head is not None:
                response = new_written_answer(result.status, keep_alive, request.writer)
            else:       # aiohttp writes this one's head (an HTTP/1.0 client)
                headers = leading_headers(_ANSWER_FIELDS, values, result.headers, result.rate_fields)
                headers["Content-Type"] = "text/event-stream"
                headers["Cache-Control"] = "no-cache"
                response = self.drain.closing(_RelayedResponse(status=result.status, headers=headers))
        except BaseException:
            result.stream.close()   # no head, no answer: what the stream holds is given back (a 500 follows)
            raise
        try:
            if head is None:
                await response.prepare(request)
            client = ClientStream(request.writer, request.transport, head)
            result.ttft_s = clock() - data.received_at
            try:
                await result.stream.pump(client)
                ending = result.stream.take_ending()    # the finishing event: one write with the end
            except asyncio.CancelledError:
                if not self.drain.cut_short():
                    raise
                # the drain's grace period ended mid-stream: end it as a failed stream, never as a
                # finished one (the upstream is already aborted: pump closed the stream)
                data.cut = ShuttingDown()
                client.write(result.stream.relay.error_event(data.cut))
                ending = b""
            if head is not None:
                client.end(ending)
            else:
                await response.write_eof(ending)
        except (ConnectionResetError, ConnectionError):
            result.status = _CLIENT_CLOSED  # the client left; closing the stream closes the upstream
            response.force_close()
        except Exception as e:
            # the head went out: no error answer is possible any more. Cut the connection so the
            # stream cannot look finished, and count and log it like any internal error.
            log_bug(log, f"request {request_id}: stream failed inside the gateway", e)
            result.status = 500
            response.force_close()
            if request.transport is not None:
                request.transport.close()
        finally:
            result.stream.close()
        return response

    def _client_api_request(self, request: web.Request) -> tuple[DataRequest, Any]:
        """A client API route that asks no upstream (``end_session``, ``count_tokens``), answered like a
        data route (counted under deployment "", access-logged, traced), errors included, as the
        caller's gateway key (None without keys; a missing or unknown one is the 401 here)."""
        trace = None if self.tracing is None else self.tracing.start(request.method, request.path, request.headers)
        request[DATA_ROUTE] = data = DataRequest(clock(), trace)
        key = self.keys.authenticate(request.headers) if self.keys is not None else None
        if key is not None:
            data.key, data.key_series = key.name, key.series
        return data, key

    async def end_session(self, request: web.Request) -> web.Response:
        """``DELETE /v1/sessions/{id}``: end a sticky session now (its backend session closed), in
        every deployment it is bound in, within the caller's gateway key's namespace."""
        data, _ = self._client_api_request(request)
        session_id = request.match_info["session_id"]
        problem = session_id_problem(session_id)
        if problem is not None:
            raise BadRequest(f"The session id {problem}.", param="session_id")
        ended = await self.engine.end_session(data.key or "", session_id)
        if not ended:
            raise GatewayError(f"No live session {session_id!r}.", status=404, type="invalid_request_error",
                               code="session_not_found")
        self._answered(request, data, 200)
        return web.Response(body=orjson.dumps({"id": session_id, "object": "session", "deleted": True,
                                               "deployments": ended}), content_type=JSON)

    async def count_tokens(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/count_tokens``, Anthropic's (Claude Code asks it every turn): the
        prompt's input tokens, for a model the caller's key may use: the upstream's count where its
        API has one (``_upstream_count``), else the gateway's estimate (``counted_input_tokens``).
        No limit drawn: counted under ``deployment=""`` as ``/v1/models``, its access line naming
        the deployment."""
        data, key = self._client_api_request(request)
        body = arrived_json(request, self.max_body_bytes)
        if body is NOT_ARRIVED:
            body = await read_json(request, self.max_body_bytes, self.body_timeout_s)
        data.series = self.engine.metrics.series("")     # not an answer of the deployment's, nor its refusals
        req, dep = self._engine_request(request, count_tokens_request, body, key, data, self._loop.time())
        data.series = self.engine.metrics.series("")
        tokens = await self._upstream_count(req, dep)
        if tokens is None:
            tokens = counted_input_tokens(req.body)
        self._answered(request, data, 200)
        return web.Response(body=orjson.dumps({"input_tokens": tokens}), content_type=JSON)

    async def _upstream_count(self, req: GatewayRequest, dep: Deployment) -> int | None:
        """The upstream's own count, where its API has one (Anthropic's, Gemini's); None where it has
        none or could not give one (a failure, a compatible server without the route, an answer without
        a count): the estimate answers then, as a count is worth more than an error to its caller."""
        try:
            return await self.engine.count_tokens(req, dep)
        except GatewayError as e:
            log.debug("request %s: %s could not count tokens (%s); estimated", req.request_id,
                      dep.config.name, e.message)
            return None

    async def models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: the models the caller's key may use; counted under ``deployment=""`` and
        access-logged like every client API answer."""
        data, key = self._client_api_request(request)
        self._answered(request, data, 200)
        return web.Response(body=self._models_body if key is None else key.models_body, content_type=JSON)

    async def metrics(self, request: web.Request) -> web.Response:
        """The host's totals (``Metrics.live_render``: during a reload, one generation's at a time);
        a 503 in the moment they move to the new generation, or from a retired worker (its
        connection ends: the next scrape reaches a worker of the new one)."""
        body = self.engine.metrics.live_render()
        if body is None:
            raise MetricsHandedOver()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    async def readyz(self, request: web.Request) -> web.Response:
        if self.drain.stopping:
            return web.Response(status=503, body=b'{"status":"draining"}', content_type=JSON)
        if not is_ready(self.engine):
            return web.Response(status=503, body=b'{"status":"all circuits of a deployment are open"}',
                                content_type=JSON)
        return web.Response(body=b'{"status":"ready"}', content_type=JSON)


#: endpoints only an upstream that has them can serve (a count is answered for any deployment)
_FORWARDED_ONLY = frozenset(("completions", "embeddings"))


def _passthrough(endpoint: str):
    def parse(body, headers, request_id: str, now: float, key):
        return passthrough_request(body, headers, request_id, now, endpoint, key)
    return parse


# each data route's path and how its body becomes a request
_DATA_ROUTES = (("/v1/chat/completions", chat_request), ("/v1/messages", messages_request),
                ("/v1/completions", _passthrough("completions")), ("/v1/embeddings", _passthrough("embeddings")))


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
