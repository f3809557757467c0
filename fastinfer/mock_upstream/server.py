"""A fake LLM provider on 127.0.0.1: the upstream of the tests, demos and benches.

Owns: an OpenAI-compatible HTTP server (chat completions streaming and not,
completions, embeddings, models) with chaos knobs (latency, error rate,
429 + Retry-After, hangs, mid-stream cuts), scripted answers, and a record
of what it received, exposed at ``/_mock/*`` for tests to inspect and steer.

Must not touch: anything of the gateway. It imports nothing from fastinfer
but the shared token-splitting helper, so it behaves like a foreign server.
"""
from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import deque
from dataclasses import dataclass, field, fields

import orjson
from aiohttp import web

from ..providers.mock import completion_words, count_prompt_tokens
from . import anthropic, gemini
from .plan import count_words, length_and_finish, new_id, openai_stream_error_event, openai_tool_answer, openai_view, wants_tools, write_stream

JSON = "application/json"


async def _client_stays(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client's connection closes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if request.transport is None or request.transport.is_closing():
            return False
        await asyncio.sleep(0.01)
    return True


def _knob(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class Chaos:
    """Behaviour knobs; every field is also a CLI flag and settable at POST /_mock/config."""

    latency_ms: float = _knob(0.0, "ms before the response head (non-stream) or the first chunk (stream)")
    itl_ms: float = _knob(0.0, "ms between streamed chunks")
    tokens: int = _knob(16, "completion tokens (= content chunks when streaming)")
    error_rate: float = _knob(0.0, "fraction of requests answered with --error-status")
    error_status: int = _knob(500, "status of those error answers")
    rate_limit_rate: float = _knob(0.0, "fraction answered 429 with Retry-After")
    retry_after_s: float = _knob(1.0, "the Retry-After of those 429s, seconds")
    hang_rate: float = _knob(0.0, "fraction never answered (until the client leaves)")
    cut_rate: float = _knob(0.0, "fraction of streams cut after --cut-after chunks")
    cut_after: int = _knob(3, "chunks sent before a cut")
    api_key: str | None = _knob(None, "when set, requests must carry it (Bearer / x-api-key / api-key)")
    api_keys: list | None = _knob(None, "keys also accepted (rotation: set a new list, the old key gets 401)")
    seed: int | None = _knob(None, "seed of the chaos dice, for repeatable runs")
    open_session_status: int = _knob(200, "status of POST /open_session (SGLang's backend sessions)")
    open_session_latency_ms: float = _knob(0.0, "ms before POST /open_session answers")
    close_session_status: int = _knob(200, "status of POST /close_session")
    close_session_failures: int = _knob(0, "the next N POST /close_session answer 503 (then --close-session-status)")
    health_status: int = _knob(200, "status of GET /health")
    strict_sessions: bool = _knob(True, "a request whose session_params.id names no open session gets 400, "
                                        "as SGLang answers")


@dataclass
class Stats:
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    disconnects: int = 0
    # one entry per request: t (arrival), path, headers, body; and when it ended: closed_at
    # (time.monotonic(), comparable across processes on the host), end ("answered" | "client_gone"
    # | "cut" | "stream_error"), client_gone
    received: deque = field(default_factory=lambda: deque(maxlen=2000))
    # backend sessions: every open_session / close_session call in order ({"t", "call", "session_id",
    # "status", "body"}), the sessions open now, and how many health checks came
    session_calls: list = field(default_factory=list)
    open_sessions: set = field(default_factory=set)
    health_checks: int = 0

    def as_dict(self) -> dict:
        return {
            "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
            "requests": self.requests, "disconnects": self.disconnects,
            "received": list(self.received), "session_calls": self.session_calls,
            "open_sessions": sorted(self.open_sessions), "health_checks": self.health_checks,
        }


class MockUpstream:
    def __init__(self, chaos: Chaos | None = None):
        self.chaos = chaos or Chaos()
        self.stats = Stats()
        self.script: deque[dict] = deque()   # queued one-shot answers, consumed in order
        self.rng = random.Random(self.chaos.seed)
        self._created = int(time.time())
        self.holds: dict[str, asyncio.Event] = {}   # script step "hold": name -> released by /_mock/release

    # ----------------------------------------------------------------- app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        # Azure OpenAI: the deployment is in the path, the version in the query, the key in api-key
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/messages", functools.partial(anthropic.messages, self))
        app.router.add_post("/v1/messages/count_tokens", functools.partial(anthropic.count_tokens, self))
        app.router.add_post("/v1beta/models/{target}", functools.partial(gemini.generate, self))
        # vLLM's token count, SGLang's session control and a health route, at the server root (outside /v1)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/open_session", self.open_session)
        app.router.add_post("/close_session", self.close_session)
        app.router.add_get("/health", self.health)
        app.router.add_get("/_mock/stats", self.get_stats)
        app.router.add_post("/_mock/reset", self.reset)
        app.router.add_post("/_mock/config", self.set_config)
        app.router.add_post("/_mock/script", self.push_script)
        app.router.add_post("/_mock/release", self.release)
        return app

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict(), dumps=lambda o: orjson.dumps(o).decode())

    async def reset(self, request: web.Request) -> web.Response:
        self.stats = Stats()
        self.script.clear()
        for event in self.holds.values():
            event.set()
        self.holds.clear()
        return web.json_response({"ok": True})

    async def release(self, request: web.Request) -> web.Response:
        """``{"hold": name}``: let the requests held by a ``hold`` step of that name go on."""
        name = orjson.loads(await request.read()).get("hold")
        event = self.holds.pop(name, None)
        if event is not None:
            event.set()
        return web.json_response({"released": event is not None})

    # ------------------------------------------------------- session control

    async def open_session(self, request: web.Request) -> web.Response:
        """SGLang's ``open_session``: ``{"session_id", "capacity_of_str_len", "timeout"}`` -> the id."""
        body = await self._session_call(request, "open", self.chaos.open_session_status)
        if self.chaos.open_session_latency_ms and not await _client_stays(
                request, self.chaos.open_session_latency_ms / 1000):
            return web.Response(status=499)    # the caller left mid-open: nothing opened
        if body is None:
            return _error(self.chaos.open_session_status, "mock open_session failure", "server_error")
        self.stats.open_sessions.add(body.get("session_id"))
        return web.json_response(body.get("session_id"))

    async def close_session(self, request: web.Request) -> web.Response:
        status = self.chaos.close_session_status
        if self.chaos.close_session_failures > 0:
            self.chaos.close_session_failures -= 1
            status = 503
        body = await self._session_call(request, "close", status)
        if body is None:
            return _error(status, "mock close_session failure", "server_error")
        if body.get("session_id") not in self.stats.open_sessions:
            return _error(400, f"session {body.get('session_id')!r} does not exist")
        self.stats.open_sessions.discard(body.get("session_id"))
        return web.Response(status=200)

    async def _session_call(self, request: web.Request, call: str, status: int) -> dict | None:
        """Record an open/close call; its body, or None when it is to fail with ``status``."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = {}
        self.stats.session_calls.append({"t": time.monotonic(), "call": call, "session_id": body.get("session_id"),
                                         "status": status, "body": body,
                                         "authorization": request.headers.get("Authorization")})
        return body if status == 200 else None

    async def health(self, request: web.Request) -> web.Response:
        self.stats.health_checks += 1
        status = self.chaos.health_status
        return web.json_response({"status": "ok" if status == 200 else "unhealthy"}, status=status)

    async def set_config(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        known = {f.name for f in fields(Chaos)}
        for k, v in body.items():
            if k not in known:
                return web.json_response({"error": f"unknown knob {k}"}, status=400)
            setattr(self.chaos, k, v)
        if "seed" in body:
            self.rng = random.Random(self.chaos.seed)
        return web.json_response({"ok": True})

    async def push_script(self, request: web.Request) -> web.Response:
        """Queue answers, one per request, in order.

        Keys: ``status`` (+ ``message``, ``code``), ``headers`` (on any answer), ``hang``,
        ``hold: name`` (wait until POST /_mock/release {"hold": name}), ``latency_ms``, ``itl_ms``,
        ``tokens``, ``body`` (raw answer text). ``{api_key}`` in a ``message`` or a
        ``stream_error`` is replaced by the key the request carried, as upstreams that echo
        a refused key do. Streams also
        ``cut_after: n`` (close the connection before chunk n), ``garbage_at: n``,
        ``stream_error_at: n`` (an in-stream error event at chunk n — ``stream_error`` sets its
        OpenAI payload, whose message Anthropic and Gemini streams carry — then the body ends
        without [DONE]), ``idle_after: n`` (n chunks, then stall
        with the connection open) and ``end_after_done_ms`` (chat streams: the body ends that long
        after [DONE], in another read). E.g. [{"status": 500}, {"hang": true}, {"idle_after": 2}, {}].
        """
        steps = orjson.loads(await request.read())
        self.script.extend(steps if isinstance(steps, list) else [steps])
        return web.json_response({"queued": len(self.script)})

    # ------------------------------------------------------------- helpers

    def _record(self, request: web.Request, body: dict | None) -> None:
        self.stats.requests += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        entry = {
            "id": self.stats.requests, "t": time.monotonic(), "path": request.path,
            "query": dict(request.query),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body, "closed_at": None, "end": None, "client_gone": False,
        }
        request["mock_entry"] = entry
        self.stats.received.append(entry)

    @staticmethod
    def _ended(request: web.Request, end: str) -> None:
        entry = request.get("mock_entry")
        if entry is not None and entry["closed_at"] is None:
            entry["closed_at"] = time.monotonic()
            entry["end"] = end
            entry["client_gone"] = end == "client_gone"

    def _next_behaviour(self) -> dict:
        if self.script:
            return self.script.popleft()
        c, r = self.chaos, self.rng.random
        if c.hang_rate and r() < c.hang_rate:
            return {"hang": True}
        if c.rate_limit_rate and r() < c.rate_limit_rate:
            return {"status": 429, "headers": {"Retry-After": f"{c.retry_after_s:g}"}}
        if c.error_rate and r() < c.error_rate:
            return {"status": c.error_status}
        if c.cut_rate and r() < c.cut_rate:
            return {"cut_after": c.cut_after}
        return {}

    @staticmethod
    def given_key(request: web.Request) -> str:
        """The API key a request carries: Bearer, x-api-key (Anthropic, Gemini) or api-key (Azure)."""
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else (
            request.headers.get("x-api-key") or request.headers.get("api-key", ""))

    def _unknown_session(self, body) -> web.Response | None:
        """A request in a backend session that is not open here: SGLang refuses it."""
        params = body.get("session_params") if isinstance(body, dict) else None
        if not (self.chaos.strict_sessions and isinstance(params, dict)):
            return None
        if params.get("id") in self.stats.open_sessions:
            return None
        return _error(400, f"session {params.get('id')!r} is not open on this server")

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        accepted = set(self.chaos.api_keys or ())
        if self.chaos.api_key:
            accepted.add(self.chaos.api_key)
        if not accepted:
            return None
        if self.given_key(request) in accepted:
            return None
        return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

    async def _admit(self, request: web.Request) -> tuple[dict | None, dict, web.Response | None]:
        """Parse, record, apply auth and the scripted/chaos behaviour before any answer."""
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._record(request, None)
            return None, {}, _error(400, "We could not parse the JSON body of your request.")
        self._record(request, body)
        denied = self._unauthorized(request)
        if denied is not None:
            return body, {}, denied
        unknown = self._unknown_session(body)
        if unknown is not None:
            return body, {}, unknown
        behaviour = self._next_behaviour()
        if "{api_key}" in orjson.dumps(behaviour).decode():
            key = self.given_key(request)
            behaviour = orjson.loads(orjson.dumps(behaviour).decode().replace("{api_key}", key))
        if behaviour.get("hang"):
            await asyncio.sleep(3600)
        if behaviour.get("hold"):
            await self.holds.setdefault(behaviour["hold"], asyncio.Event()).wait()
        delay = behaviour.get("latency_ms", self.chaos.latency_ms)
        if delay:
            await asyncio.sleep(delay / 1000)
        status = behaviour.get("status", 200)
        if status != 200:
            resp = _error(status, behaviour.get("message", f"mock upstream error {status}"),
                          "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error",
                          behaviour.get("code"))
            resp.headers.update(behaviour.get("headers", {}))
            return body, behaviour, resp
        if "body" in behaviour:  # garbage or a hand-written answer
            return body, behaviour, web.Response(body=behaviour["body"].encode(), content_type=JSON)
        return body, behaviour, None

    async def _handle(self, request: web.Request, answer) -> web.StreamResponse:
        try:
            body, behaviour, early = await self._admit(request)
            try:
                resp = early if early is not None else await answer(request, body, behaviour)
            except (TypeError, AttributeError, KeyError, ValueError) as e:
                if request.get("mock_streaming"):
                    raise
                # a body of the right JSON type but the wrong shape inside: a real API says 400
                resp = _error(400, f"The mock could not read this request: {type(e).__name__}: {e}")
            if behaviour.get("headers") and not resp.prepared:
                resp.headers.update(behaviour["headers"])
            return resp
        except asyncio.CancelledError:
            self.stats.disconnects += 1
            self._ended(request, "client_gone")
            raise
        except (ConnectionResetError, ConnectionError):
            self.stats.disconnects += 1
            self._ended(request, "client_gone")
            raise
        finally:
            self.stats.in_flight -= 1
            self._ended(request, "answered")

    # ----------------------------------------------------------- endpoints

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, self._chat_answer)

    async def _chat_answer(self, request, body, behaviour) -> web.StreamResponse:
        if not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", param="messages")
        view = openai_view(body)
        if wants_tools(view):
            return await openai_tool_answer(self, request, body, behaviour)
        model = body.get("model", "mock")
        n_tokens, finish = length_and_finish(behaviour.get("tokens", self.chaos.tokens), view.max_tokens)
        words = completion_words(body, n_tokens)
        usage = {"prompt_tokens": count_prompt_tokens(body), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            return await self._stream_chat(request, body, model, words, usage, finish, behaviour)
        answer = {
            "id": new_id("chatcmpl-"), "object": "chat.completion", "created": self._created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                         "finish_reason": finish}],
            "usage": usage,
        }
        return web.Response(body=orjson.dumps(answer), content_type=JSON)

    async def _stream_chat(self, request, body, model, words, usage, finish, behaviour) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           **behaviour.get("headers", {})})
        await resp.prepare(request)
        request["mock_streaming"] = True
        head = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk",
                "created": self._created, "model": model}
        extra = {"usage": None} if include_usage else {}
        itl = behaviour.get("itl_ms", self.chaos.itl_ms) / 1000
        cut_after = behaviour.get("cut_after")
        frames = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}], **extra}]
        frames += [{**head, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}], **extra}
                   for w in words]
        frames.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], **extra})
        if include_usage:
            frames.append({**head, "choices": [], "usage": usage})
        for i, frame in enumerate(frames):
            if cut_after is not None and i >= cut_after:
                self._ended(request, "cut")
                request.transport.close()  # vanish mid-stream: no terminator, no [DONE]
                return resp
            if i == behaviour.get("stream_error_at"):
                # an in-stream error event, then a clean end of the body without [DONE]
                await resp.write(openai_stream_error_event(behaviour))
                self._ended(request, "stream_error")
                await resp.write_eof()
                return resp
            if i == behaviour.get("idle_after"):
                await asyncio.sleep(3600)  # stall: connection open, nothing more (until the client leaves)
            if "garbage_at" in behaviour and i == behaviour["garbage_at"]:
                await resp.write(b"data: {not json at all\n\n")
                continue
            await resp.write(b"data: " + orjson.dumps(frame) + b"\n\n")
            if itl and i < len(frames) - 1:
                await asyncio.sleep(itl)
        await resp.write(b"data: [DONE]\n\n")
        if behaviour.get("end_after_done_ms"):
            await asyncio.sleep(behaviour["end_after_done_ms"] / 1000)  # [DONE] and the body's end apart
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        async def answer(request, body, behaviour):
            n_tokens, finish = length_and_finish(behaviour.get("tokens", self.chaos.tokens), body.get("max_tokens"))
            words = completion_words({"messages": [{"content": str(body.get("prompt", ""))}]}, n_tokens)
            head = {"id": new_id("cmpl-"), "object": "text_completion", "created": self._created,
                    "model": body.get("model")}
            usage = {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)}
            if not body.get("stream"):
                return web.Response(body=orjson.dumps({**head, "choices": [
                    {"index": 0, "text": "".join(words), "finish_reason": finish}], "usage": usage}), content_type=JSON)
            # as vLLM streams them: a chunk a token, the finish, the usage when asked for, [DONE]
            frames = [{**head, "choices": [{"index": 0, "text": w, "finish_reason": None}]} for w in words]
            frames.append({**head, "choices": [{"index": 0, "text": "", "finish_reason": finish}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                frames.append({**head, "choices": [], "usage": usage})
            events = [b"data: " + orjson.dumps(f) + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]
            return await write_stream(self, request, events, behaviour, openai_stream_error_event(behaviour))
        return await self._handle(request, answer)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        async def answer(request, body, behaviour):
            inputs = body.get("input", "")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            data = [{"object": "embedding", "index": i,
                     "embedding": [((hash(str(x)) >> s) & 0xFF) / 255 for s in range(0, 64, 8)]}
                    for i, x in enumerate(inputs)]
            return web.Response(body=orjson.dumps({
                "object": "list", "data": data, "model": body.get("model"),
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }), content_type=JSON)
        return await self._handle(request, answer)

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        """vLLM's ``/tokenize``: a chat request's ``messages`` (or a ``prompt``) counted a word a token,
        as the mock's usage counts them."""
        async def answer(request, body, behaviour):
            if "messages" in body:
                if not isinstance(body["messages"], list):
                    return _error(400, "messages: Input should be a valid list")
                count = openai_view(body).prompt_tokens
            elif isinstance(body.get("prompt"), str):
                count = count_words(body["prompt"])
            else:
                return _error(400, "prompt: Field required")
            return web.Response(body=orjson.dumps({"count": count, "max_model_len": 32768,
                                                   "tokens": list(range(count))}), content_type=JSON)
        return await self._handle(request, answer)

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"object": "list", "data": [
            {"id": "mock-model", "object": "model", "created": self._created, "owned_by": "mock"}]}),
            content_type=JSON)


def _error(status: int, message: str, type_: str = "invalid_request_error",
           code: str | None = None, param: str | None = None) -> web.Response:
    return web.Response(status=status, content_type=JSON, body=orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}))


async def serve(host: str, port: int, chaos: Chaos, ready: asyncio.Event | None = None) -> None:
    upstream = MockUpstream(chaos)
    runner = web.AppRunner(upstream.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound_port = runner.addresses[0][1]  # the real port, also with --port 0
    print(f"mock-upstream listening on http://{host}:{bound_port}/v1", flush=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
