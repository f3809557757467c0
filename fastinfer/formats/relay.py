"""Stream relays: upstream SSE bytes in, the caller's SSE bytes out, event by event.

Owns: ``StreamRelay`` (what every relay offers the engine) and ``TranslatingRelay``
(parses with the compiled SSE parser, runs a chain of pure stream translators,
writes with the compiled SSE writer; nothing is buffered beyond a partial
event). The passthrough relays live with their format (``openai``,
``anthropic``) and cut each read after its last whole event with the compiled
``_core.sse.whole_events``. Must not touch: sockets, the engine, translation rules
(those live in the format modules).
"""
from __future__ import annotations

import orjson

from .._core.sse import SSEParser, encode_data, encode_event
from ..errors import GatewayError, UpstreamFailure
from ..redact import redact
from .common import DONE, ERROR, estimated_usage, json_object

_DONE_EVENT = b"data: [DONE]\n\n"


class StreamRelay:
    """Turns upstream stream bytes into the caller's stream bytes, chunk by chunk.

    ``feed`` returns what may be written to the client now (only whole events,
    so an error event can always be appended cleanly); ``finished`` tells if
    the upstream ended the stream properly; ``usage`` is the upstream's count,
    normalized (``common``), or an estimate flagged ``usage_estimated``
    when the upstream sent none. ``error`` is the data of an error event the
    upstream sent in-stream, as it came (the engine classifies it); the caller
    has been sent its own version of it.
    """

    finished: bool = False
    usage: dict | None = None
    error: bytes | None = None    # an error event the upstream sent in-stream (its data)
    failure = None                # a GatewayError: the upstream stream became unusable (garbage)

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def error_event(self, err) -> bytes:
        """The caller-format event that ends a stream which failed after its first byte."""
        raise NotImplementedError


class TranslatingRelay(StreamRelay):
    """Upstream stream -> translator chain -> caller stream.

    ``stages`` are translators with ``push(event, payload) -> items``,
    ``usage``, ``finished`` and ``chars``; the first faces the upstream, the
    last produces the caller's items. ``usage`` is the upstream's count,
    normalized, or an estimate (``usage_estimated``) when it sent none.
    """

    __slots__ = ("_parser", "_stages", "_caller", "_request_body", "error", "failure")

    def __init__(self, stages: list, caller, request_body: dict):
        self._parser = SSEParser()
        self._stages = stages
        self._caller = caller               # the caller's ``Format``: its error event ends a failed stream
        self._request_body = request_body
        self.error: bytes | None = None     # the upstream's in-stream error event (its data), as it came
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
                    out.append(self._caller.error_event(GatewayError(
                        redact(payload["message"]), type=payload["type"], code="upstream_error")))
                    self.error = data       # set once the client's error event is made: it is passed on
                    return b"".join(out)
                out.append(self._encode(name, payload))
        return b"".join(out)

    def _encode(self, name, payload) -> bytes:
        if payload is DONE:
            return _DONE_EVENT
        if name is None:
            return encode_data(orjson.dumps(payload))
        return encode_event(orjson.dumps(payload), event=name.encode())

    def error_event(self, err) -> bytes:
        return self._caller.error_event(err)
