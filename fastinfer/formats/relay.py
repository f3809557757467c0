"""Stream relays: upstream SSE bytes in, the caller's SSE bytes out, event by event.

Owns: ``TranslatingRelay`` (parses with the compiled SSE parser, runs a chain
of pure stream translators, writes with the compiled SSE writer; nothing is
buffered beyond a partial event), ``AnthropicStreamRelay`` (Anthropic upstream
to Anthropic caller, forwarded as bytes), and the caller-format error events.
Must not touch: sockets, the engine, translation rules (those live in the
format modules).
"""
from __future__ import annotations

import orjson

from .._core.sse import SSEParser, encode_data, encode_event
from ..errors import UpstreamFailure
from .base import StreamRelay, whole_events
from .common import DONE, ERROR, estimated_usage, json_object, make_usage, usage_from_anthropic

_DONE_EVENT = b"data: [DONE]\n\n"


def openai_error_event(message: str, type: str, code=None) -> bytes:
    return encode_data(orjson.dumps({"error": {"message": message, "type": type, "code": code}}))


def anthropic_error_event(message: str, type: str) -> bytes:
    return encode_event(orjson.dumps({"type": "error", "error": {"type": type, "message": message}}), event=b"error")


def error_event_for(api: str, err) -> bytes:
    """The event that ends a caller's stream which failed after its first byte."""
    if api == "anthropic":
        return anthropic_error_event(err.message, err.type)
    return openai_error_event(err.message, err.type, err.code)


class TranslatingRelay(StreamRelay):
    """Upstream stream -> translator chain -> caller stream.

    ``stages`` are translators with ``push(event, payload) -> items``,
    ``usage``, ``finished`` and ``chars``; the first faces the upstream, the
    last produces the caller's items. ``usage`` is the upstream's count,
    normalized, or an estimate (``usage_estimated``) when it sent none.
    """

    __slots__ = ("_parser", "_stages", "_api", "_request_body", "error", "failure")

    def __init__(self, stages: list, api: str, request_body: dict):
        self._parser = SSEParser()
        self._stages = stages
        self._api = api
        self._request_body = request_body
        self.error: bytes | None = None     # the caller-format error event of an upstream in-stream error
        self.failure = None                 # set when the upstream sent garbage: the engine ends the stream

    @property
    def finished(self) -> bool:
        return self._stages[0].finished and self.error is None

    @property
    def usage(self) -> dict | None:
        first = self._stages[0]
        return first.usage or estimated_usage(self._request_body, first.chars)

    def feed(self, chunk: bytes) -> bytes:
        if self.error is not None or self.failure is not None or self._stages[0].finished:
            return b""  # nothing may follow an error or the end
        out: list[bytes] = []
        for event in self._parser.feed(chunk):
            data = event.data
            if not data:
                continue
            if data == b"[DONE]":
                items = [(None, DONE)]
            else:
                payload = json_object(data)
                if payload is None:
                    self.failure = UpstreamFailure("upstream sent a malformed stream event")
                    return b"".join(out)
                items = [(event.event if event.event != "message" else None, payload)]
            for stage in self._stages:
                items = [produced for item in items for produced in stage.push(*item)]
            for name, payload in items:
                if name == ERROR:
                    self.error = self._error_bytes(payload["message"], payload.get("type") or "api_error")
                    out.append(self.error)
                    return b"".join(out)
                out.append(self._encode(name, payload))
        return b"".join(out)

    def _encode(self, name, payload) -> bytes:
        if payload is DONE:
            return _DONE_EVENT
        if name is None:
            return encode_data(orjson.dumps(payload))
        return encode_event(orjson.dumps(payload), event=name.encode())

    def _error_bytes(self, message: str, type: str) -> bytes:
        if self._api == "anthropic":
            return anthropic_error_event(message, type)
        return openai_error_event(message, type, "upstream_error")

    def error_event(self, err) -> bytes:
        return error_event_for(self._api, err)


def _needs_attention(events: bytes) -> bool:
    """Could these whole Anthropic events be a start, delta-with-usage, stop, error, or not
    JSON at all (every event must end in ``}``)?"""
    return (b"message_" in events or b"error" in events
            or events.count(b"\n\n") != events.count(b"}\n\n"))


class AnthropicStreamRelay(StreamRelay):
    """Anthropic upstream -> Anthropic caller: whole events forwarded as bytes.

    Only events that may carry usage, the end or an error are parsed; the
    common ``content_block_delta`` chunk is forwarded untouched.
    """

    __slots__ = ("_parser", "_carry", "_input", "_usage", "_deltas", "_request_body", "finished", "error",
                 "failure")

    def __init__(self, request_body: dict):
        self._parser = SSEParser()
        self._carry = b""
        self._input: dict = {}
        self._usage: dict | None = None
        self._deltas = 0
        self._request_body = request_body
        self.finished = False
        self.error: bytes | None = None
        self.failure = None

    @property
    def usage(self) -> dict | None:
        if self._usage is not None:
            return self._usage
        if self._input:
            return usage_from_anthropic(self._input)
        return make_usage(estimated_usage(self._request_body, 0)["prompt_tokens"], self._deltas, estimated=True)

    def feed(self, chunk: bytes) -> bytes:
        out, self._carry = whole_events(self._carry, chunk)
        if not out:
            return b""
        if not _needs_attention(out):
            self._deltas += out.count(b"content_block_delta") >> 1  # "event:" line and "type" field
            return out
        events = self._parser.feed(out)
        for i, event in enumerate(events):
            data = json_object(event.data)
            if data is None:
                # garbage: forward what came before it; the engine ends the stream with an error event
                self.failure = UpstreamFailure("upstream sent a malformed stream event")
                return b"".join(encode_event(e.data, event=e.event.encode()) for e in events[:i])
            name = event.event
            if name == "content_block_delta":
                self._deltas += 1
            elif name == "message_start":
                self._input = (data.get("message") or {}).get("usage") or {}
            elif name == "message_delta":
                given = data.get("usage") or {}
                self._usage = usage_from_anthropic({**self._input, **{k: v for k, v in given.items()
                                                                      if v is not None}})
            elif name == "message_stop":
                self.finished = True
            elif name == "error":
                self.error = event.data
        return out

    def error_event(self, err) -> bytes:
        return anthropic_error_event(err.message, err.type)


__all__ = ["AnthropicStreamRelay", "TranslatingRelay", "anthropic_error_event", "error_event_for",
           "openai_error_event"]
