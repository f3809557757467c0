"""OpenAI and OpenAI-compatible streams (vLLM, SGLang, llama.cpp, Ollama, Azure OpenAI).

Owns: relaying their SSE streams to OpenAI clients
as bytes, touching only what the gateway must: it drops the usage-only chunk
the gateway asked for on the client's behalf, and forwards only whole events.
Also ``/v1/completions`` and ``/v1/embeddings`` (``req.endpoint``), passed through.
Anthropic callers are translated by the ``Provider`` defaults (``translate``).
Compatible servers' quirks are tolerated: no usage chunk (usage is then
estimated), ``reasoning_content`` deltas, missing ``created``.
"""
from __future__ import annotations

import orjson

from ..errors import UpstreamFailure

from .._core.sse import SSEParser, encode_data
from .base import StreamRelay, whole_events
from .common import estimated_usage, json_object, make_usage, usage_from_openai

_USAGE_KEY = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')


def _needs_attention(events: bytes) -> bool:
    """Could these whole events hold the end marker, a usage object, an error, or an
    event that is not a JSON object (every event must end in ``}``)?

    A few C-speed substring scans: ``out`` always ends on an event boundary, so
    the parser holds no partial state when a chunk skips it.
    """
    return (b"[DONE]" in events or b'"usage":{' in events or b'"usage": {' in events
            or b'"error"' in events or events.count(b"\n\n") != events.count(b"}\n\n"))


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
        if not _needs_attention(out):
            self._events += out.count(b"data:")
            return out  # the common token chunk: forwarded untouched, never parsed
        events = self._parser.feed(out)
        drop = None
        self._events += len(events)
        for i, event in enumerate(events):
            data = event.data
            if data == b"[DONE]":
                self.finished = True
                continue
            frame = json_object(data)
            if frame is None:
                # garbage: forward what came before it, then the stream ends with an error event
                self.failure = UpstreamFailure("upstream sent a malformed stream event")
                return b"".join(encode_data(e.data) for j, e in enumerate(events[:i]) if j != drop)
            if "error" in frame:
                self.error = data
            elif frame.get("usage"):
                self._usage = usage_from_openai(frame["usage"])
                if not self._client_wants_usage and not frame.get("choices"):
                    drop = i
        if drop is None:
            return out
        return b"".join(encode_data(e.data) for j, e in enumerate(events) if j != drop)

    def error_event(self, err) -> bytes:
        return encode_data(orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}}))
