"""What every provider offers the engine, and the reply it hands back.

A provider turns a gateway request into one upstream call on a replica
session it is given, and hands back an ``UpstreamReply``: a status, headers,
and either a complete body or an async iterator of raw upstream bytes.
It never chooses replicas, retries or touches the client connection.
"""
from __future__ import annotations

from typing import AsyncIterator, Callable

from ..config import DeploymentConfig


class UpstreamReply:
    __slots__ = ("status", "headers", "body", "chunks", "_release")

    def __init__(self, status: int, headers, body: bytes | None,
                 chunks: AsyncIterator[bytes] | None, release: Callable[[], None] | None):
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks
        self._release = release

    @classmethod
    def complete(cls, status: int, body: bytes, headers=None) -> "UpstreamReply":
        return cls(status, headers or {}, body, None, None)

    @classmethod
    def streaming(cls, status: int, chunks: AsyncIterator[bytes], headers=None,
                  release: Callable[[], None] | None = None) -> "UpstreamReply":
        return cls(status, headers or {}, None, chunks, release)

    def close(self) -> None:
        """Give the connection back (or drop it if the stream did not finish)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class Provider:
    """Base of all providers; one instance per deployment.

    ``req`` is the engine's ``GatewayRequest``: ``req.api`` names the caller's API
    ("openai" or "anthropic") and ``req.body`` is in that API's shape. A provider
    whose wire format equals the caller's passes bodies and streams through;
    otherwise it translates in both directions.
    """

    #: client APIs this provider can serve
    apis: tuple[str, ...] = ("openai",)

    def __init__(self, deployment: DeploymentConfig):
        self.deployment = deployment

    async def send(self, session, req, timeouts) -> UpstreamReply:
        """Make one upstream call for ``req`` on ``session``'s replica."""
        raise NotImplementedError

    def reply_body(self, body: bytes, req) -> bytes:
        """A successful non-streamed upstream body, in the caller's format."""
        return body

    def stream_relay(self, req) -> "StreamRelay":
        """A fresh relay turning this upstream's stream into the caller's stream."""
        raise NotImplementedError


class StreamRelay:
    """Turns upstream stream bytes into the caller's stream bytes, chunk by chunk.

    ``feed`` returns what may be written to the client now (only whole events,
    so an error event can always be appended cleanly); ``finished`` tells if
    the upstream ended the stream properly; ``usage`` is the upstream's count.
    """

    finished: bool = False
    usage: dict | None = None
    error: bytes | None = None    # an error event the upstream sent in-stream

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def error_event(self, err) -> bytes:
        """The caller-format event that ends a stream which failed after its first byte."""
        raise NotImplementedError
