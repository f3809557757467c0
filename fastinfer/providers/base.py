"""What every provider offers the engine, and the reply it hands back.

A provider turns a gateway request into one upstream call on a replica
session it is given, and hands back an ``UpstreamReply``: a status, headers,
and either a complete body or a live ``UpstreamStream`` whose bytes arrive by
callback. It never chooses replicas, retries or touches the client connection.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

from ..config import DeploymentConfig
from ..errors import GatewayError, UpstreamFailure


class UpstreamStream:
    """A live upstream body. ``start`` hands over every later byte, by callback."""

    def start(self, on_chunk: Callable[[bytes], None], on_end: Callable[[GatewayError | None], None]) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        """Stop reading from the upstream (the client is slower than the upstream)."""

    def resume(self) -> None:
        """Read again."""

    def close(self) -> None:
        """Abandon the stream; an unfinished upstream exchange is aborted."""


class UpstreamReply:
    __slots__ = ("status", "headers", "body", "first", "stream")

    def __init__(self, status: int, headers, body: bytes | None, first: bytes | None,
                 stream: UpstreamStream | None):
        self.status = status
        self.headers = headers
        self.body = body
        self.first = first
        self.stream = stream

    @classmethod
    def complete(cls, status: int, body: bytes, headers=None) -> "UpstreamReply":
        return cls(status, headers or {}, body, None, None)

    @classmethod
    def streaming(cls, first: bytes, stream: UpstreamStream, headers=None) -> "UpstreamReply":
        """A 200 stream whose first bytes have arrived (so failures before them can be retried)."""
        return cls(200, headers or {}, None, first, stream)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


class IteratorStream(UpstreamStream):
    """An ``UpstreamStream`` fed by an async iterator (in-process providers)."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._chunks = chunks
        self._task: asyncio.Task | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()

    @classmethod
    async def open(cls, chunks: AsyncIterator[bytes]) -> UpstreamReply:
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            raise UpstreamFailure("upstream ended the stream before sending anything") from None
        return UpstreamReply.streaming(first, cls(chunks))

    def start(self, on_chunk, on_end) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(on_chunk, on_end))

    async def _run(self, on_chunk, on_end) -> None:
        try:
            async for chunk in self._chunks:
                if not self._flowing.is_set():
                    await self._flowing.wait()
                on_chunk(chunk)
        except GatewayError as e:
            on_end(e)
            return
        on_end(None)

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class Provider:
    """Base of all providers; one instance per deployment.

    ``req`` is the engine's ``GatewayRequest``: ``req.api`` names the caller's API
    ("openai" or "anthropic") and ``req.body`` is in that API's shape. A provider
    whose wire format (``wire``) equals the caller's passes bodies and streams
    through; otherwise the defaults below translate in both directions
    (``translate.dispatch``), so a provider only says how to reach its upstream.
    """

    #: client APIs this provider can serve
    apis: tuple[str, ...] = ("openai", "anthropic")
    #: the upstream's wire format: "openai" | "anthropic" | "gemini"
    wire: str = "openai"
    #: OpenAI endpoints this provider has ("chat", and for OpenAI-shaped upstreams "completions", "embeddings")
    endpoints: tuple[str, ...] = ("chat",)

    def __init__(self, deployment: DeploymentConfig):
        self.deployment = deployment

    async def send(self, session, req, timeouts) -> UpstreamReply:
        """Make one upstream call for ``req`` on ``session``'s replica."""
        raise NotImplementedError

    def upstream_body(self, req) -> dict:
        """``req.body`` in this upstream's wire format, for its upstream model."""
        from .translate import dispatch
        return dispatch.translate_request(self.wire, req, self.deployment)

    def reply_body(self, body: bytes, req) -> bytes:
        """A successful non-streamed upstream body, in the caller's format."""
        if req.api == self.wire:
            return body
        from .translate import dispatch
        return dispatch.convert_reply(self.wire, body, req, self.deployment.upstream_model)

    def reply_usage(self, body: bytes, req) -> dict:
        """Normalized usage of a successful non-streamed upstream body (see ``translate.common``):
        prompt/completion/total tokens, cached/reasoning when known, ``usage_estimated`` when guessed.
        Raises ``UpstreamFailure`` when the body is not a JSON object."""
        from .translate import dispatch
        return dispatch.reply_usage(self.wire, body, req)

    def stream_relay(self, req) -> "StreamRelay":
        """A fresh relay turning this upstream's stream into the caller's stream."""
        from .translate import dispatch
        return dispatch.make_relay(self.wire, req, self.deployment.upstream_model)


class StreamRelay:
    """Turns upstream stream bytes into the caller's stream bytes, chunk by chunk.

    ``feed`` returns what may be written to the client now (only whole events,
    so an error event can always be appended cleanly); ``finished`` tells if
    the upstream ended the stream properly; ``usage`` is the upstream's count,
    normalized (``translate.common``), or an estimate flagged ``usage_estimated``
    when the upstream sent none.
    """

    finished: bool = False
    usage: dict | None = None
    error: bytes | None = None    # an error event the upstream sent in-stream
    failure = None                # a GatewayError: the upstream stream became unusable (garbage)

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def error_event(self, err) -> bytes:
        """The caller-format event that ends a stream which failed after its first byte."""
        raise NotImplementedError


def whole_events(carry: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """Split what has arrived into (the whole SSE events, the partial one to carry to the next read).

    Relays forward only whole events, so that an error event can always be appended cleanly.
    """
    buf = carry + chunk if carry else chunk
    end = last_event_end(buf)
    if end == len(buf):
        return buf, b""
    return buf[:end], buf[end:]


def last_event_end(buf: bytes) -> int:
    """Offset just past the last complete SSE event in ``buf`` (0 if none)."""
    if buf.endswith(b"\n\n"):
        return len(buf)
    end = buf.rfind(b"\n\n")
    end = end + 2 if end >= 0 else 0
    crlf = buf.rfind(b"\r\n\r\n")
    if crlf >= 0 and crlf + 4 > end:
        end = crlf + 4
    cr = buf.rfind(b"\r\r")
    if cr >= 0 and cr + 2 > end:
        end = cr + 2
    return end
