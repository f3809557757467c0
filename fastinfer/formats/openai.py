"""The OpenAI wire format: Chat Completions (the pivot), and ``/v1/completions`` and
``/v1/embeddings`` passed through. Upstreams: OpenAI and OpenAI-compatible servers
(vLLM, SGLang, llama.cpp, Ollama, Azure OpenAI).

Owns: ``OPENAI``, the ``Format`` (the request asks for usage on every stream,
since accounting needs it even when the client did not; the OpenAI error body,
built here and nowhere else), and ``OpenAIStreamRelay``, which relays an OpenAI
stream to an OpenAI client as bytes, touching only what the gateway must: it
drops the usage-only chunk the gateway asked for on the client's behalf, and
forwards only whole events. Compatible servers' quirks are tolerated: no usage
chunk (usage is then estimated), ``reasoning_content`` deltas, missing ``created``.
Must not touch: HTTP, the engine.
"""
from __future__ import annotations

import orjson

from .._core.bodies import openai_reply_usage
from .._core.sse import SSEParser, encode_data, plain_prefix, whole_events
from ..errors import GatewayError, UpstreamFailure
from ..redact import redact_bytes
from .base import NOT_AN_OBJECT, Format
from .common import estimated_usage, json_object, make_usage, text_of, usage_from_openai
from .relay import StreamRelay


# what makes an event need reading: the end, a usage object, an error (and not ending like a JSON object)
_MARKERS = (b"[DONE]", b'"usage":{', b'"usage": {', b'"error"')


def _event_needs_parsing(data: bytes) -> bool:
    """``plain_prefix``'s test for one parsed event's data (not the end marker): a token event after
    the first that needs reading is skipped as it would have been in a read of its own. (``_MARKERS``
    spelled out: a generator over them cost every stream's last events ~30 opcodes.)"""
    return (data[-1:] != b"}" or b'"usage":{' in data or b'"usage": {' in data or b'"error"' in data
            or b"[DONE]" in data)


class OpenAIStreamRelay(StreamRelay):
    """OpenAI upstream stream -> OpenAI client stream, as bytes.

    ``usage`` is normalized; a server that sends no usage chunk gets an
    estimate: one token per forwarded event (compatible servers stream about a
    token per chunk), the prompt from the request's text length.
    """

    __slots__ = ("_parser", "_carry", "_client_wants_usage", "_usage", "_events", "_request_body",
                 "finished", "error", "failure")

    def __init__(self, client_wants_usage: bool, request_body: dict | None = None):
        self._parser = SSEParser()
        self._carry = b""
        self._client_wants_usage = client_wants_usage
        self._usage = None
        self._events = 0
        self._request_body = request_body
        self.finished = False
        self.error = None
        self.failure = None

    @property
    def usage(self) -> dict | None:
        if self._usage is not None:
            return self._usage
        prompt = estimated_usage(self._request_body or {}, 0)["prompt_tokens"]
        return make_usage(prompt, max(0, self._events - 2), estimated=True)  # minus role and finish chunks

    def feed(self, chunk: bytes) -> bytes:
        out, self._carry = whole_events(self._carry, chunk)
        if not out:
            return b""
        # the token events up to the first that needs reading go out untouched, never parsed:
        # usually a whole read, or a fast upstream's whole short stream but its usage and end
        plain, lines = plain_prefix(out, _MARKERS)
        self._events += lines
        if plain == len(out):
            return out
        if not plain:
            return self._read(out)
        rest = out[plain:]
        read = self._read(rest)
        # the plain events are not copied twice (a slice, then the sum) to go out with the rest:
        # not at all when the rest goes out as it came, else once (a 64-event read is ~11 KB)
        return out if read is rest else b"".join((memoryview(out)[:plain], read))

    def _read(self, out: bytes) -> bytes:
        """Whole events that may need attention, parsed: what of them goes to the client."""
        events = self._parser.feed(out)
        drop: set[int] = set()         # usage-only events the client did not ask for
        redacted: dict[int, bytes] = {}   # error events whose text had to be cleaned
        self._events += len(events)
        for i, event in enumerate(events):
            data = event.data
            if data == b"[DONE]":
                self.finished = True
                continue
            if not _event_needs_parsing(data):
                continue      # a token event read with the end (one read for a whole short stream)
            frame = json_object(data)
            if frame is None:
                # garbage: forward what came before it, then the stream ends with an error event
                self.failure = UpstreamFailure("upstream sent a malformed stream event")
                return b"".join(encode_data(e.data) for j, e in enumerate(events[:i]) if j not in drop)
            if "error" in frame:
                self.error = redact_bytes(data)
                if self.error is not data:
                    redacted[i] = self.error
            elif frame.get("usage"):
                self._usage = usage_from_openai(frame["usage"])
                if not self._client_wants_usage and not frame.get("choices"):
                    drop.add(i)
        if not drop and not redacted:
            return out
        return b"".join(encode_data(redacted.get(j, e.data)) for j, e in enumerate(events) if j not in drop)

    def error_event(self, err) -> bytes:
        return OPENAI.error_event(err)


def _ask_for_usage(body: dict) -> None:
    """A stream's upstream body always asks for usage: accounting needs it even when the client did not."""
    options = body.get("stream_options")
    body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}


class OpenAIFormat(Format):
    name = "openai"
    endpoints = ("chat", "completions", "embeddings")

    def request_to_pivot(self, body: dict, model: str) -> dict:
        return {**body, "model": model}

    def upstream_body(self, req, caller: Format, deployment) -> dict:
        """``Format.upstream_body``; an OpenAI caller's body (nearly every request) is the upstream's
        with its model and, for a stream, its usage asked for, made here: two calls less a request."""
        if caller is not self:
            return Format.upstream_body(self, req, caller, deployment)
        body = {**req.body, "model": deployment.upstream_model}
        if req.stream:
            _ask_for_usage(body)
        return body

    def request_from_pivot(self, body: dict, deployment, stream: bool) -> dict:
        if stream:
            _ask_for_usage(body)
        return body

    def reply(self, body: bytes, req, caller: Format, model: str) -> tuple[bytes, dict]:
        """``Format.reply``; to an OpenAI caller (nearly every reply) the body goes as it came, its
        usage read in one compiled call (``openai_reply_usage``: parse, check, normalize)."""
        if caller is not self:
            return Format.reply(self, body, req, caller, model)
        try:
            usage = openai_reply_usage(body)
        except ValueError:
            raise UpstreamFailure(NOT_AN_OBJECT) from None
        if usage is None:       # no usage (a compatible server's quirk): estimated from the reply's text
            usage = self._usage(json_object(body), req)
        return body, usage

    def reply_to_pivot(self, reply: dict, model: str) -> dict:
        return reply

    def reply_from_pivot(self, reply: dict, usage: dict) -> dict:
        return reply

    def reply_usage(self, reply: dict) -> dict | None:
        return usage_from_openai(reply.get("usage"))

    def reply_text(self, reply: dict) -> str:
        return "".join(text_of((c.get("message") or {}).get("content")) or c.get("text") or ""
                       for c in reply.get("choices") or ())

    def stream_to_pivot(self, model: str, include_usage: bool, estimate):
        return None

    def stream_from_pivot(self, model: str, estimate):
        return None

    def passthrough_relay(self, req) -> StreamRelay:
        return OpenAIStreamRelay(req.client_wants_usage, req.body)

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code,
                                       "param": err.param}})

    def error_event(self, err: GatewayError) -> bytes:
        return encode_data(self.error_body(err))


OPENAI = OpenAIFormat()
