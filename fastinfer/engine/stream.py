"""A relayed stream: upstream bytes through the provider's relay into the client writer.

Owns: the per-chunk path of a streamed answer after the attempt loop chose it —
feeding each upstream read through the relay (translation, usage), writing the
result to the client without a task switch, pausing the upstream while the
client is slow, ending a failed stream with the caller's error event, and
releasing what the stream holds exactly once. Must not touch: aiohttp objects
(the gateway passes a ``ClientWriter``), retries, routing.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

from ..errors import GatewayError, UpstreamFailure
from ..formats.base import StreamRelay
from ..transport import UpstreamReply


class ClientWriter(Protocol):
    """The gateway's side of a stream: synchronous, non-blocking writes."""

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client; False when its buffer is full (pause the upstream)."""

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""


class RelayedStream:
    """An upstream stream on its way to the client, relayed chunk by chunk by callback.

    Each upstream read goes through the provider's relay (translation, usage)
    and straight to the client writer, with no task switch per chunk. A stream
    that fails after its first byte ends with the relay's error event.
    """

    __slots__ = ("reply", "relay", "_on_done", "_client", "_done", "_resumer", "_closed")

    def __init__(self, reply: UpstreamReply, relay: StreamRelay, on_done):
        self.reply = reply
        self.relay = relay
        self._on_done = [on_done]
        self._client: ClientWriter | None = None
        self._done: asyncio.Future | None = None
        self._resumer: asyncio.Task | None = None
        self._closed = False

    async def pump(self, client: ClientWriter) -> None:
        """Relay the whole stream to ``client``; returns when it has ended either way."""
        self._client = client
        self._done = asyncio.get_running_loop().create_future()
        try:
            self._on_chunk(self.reply.first)
            self.reply.stream.start(self._on_chunk, self._on_end)
            await self._done
        finally:
            self.close()

    def close(self) -> None:
        """End the stream's life: abort the upstream if unfinished, release what it holds.

        Idempotent; the gateway calls it too, so a stream it never got to pump
        (the client left before the response head went out) leaks nothing.
        """
        if self._closed:
            return
        self._closed = True
        self.reply.close()
        if self._resumer is not None:
            self._resumer.cancel()
        for callback in self._on_done:
            callback()

    def also_on_done(self, callback) -> None:
        """Run ``callback`` when the stream has ended, however it ended."""
        self._on_done.append(callback)

    def _on_chunk(self, chunk: bytes) -> None:
        relay = self.relay
        out = relay.feed(chunk)
        if relay.failure is not None:
            if out:
                self._client.write(out)
            self.reply.close()
            self._on_end(relay.failure)
            return
        if out and not self._client.write(out) and self._resumer is None:
            self.reply.stream.pause()
            self._resumer = asyncio.get_running_loop().create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        await self._client.drain()
        self._resumer = None
        self.reply.stream.resume()

    def _on_end(self, error: GatewayError | None) -> None:
        if self._done.done():
            return
        relay = self.relay
        if error is not None:
            self._client.write(relay.error_event(error))
        elif not relay.finished and relay.error is None:
            self._client.write(relay.error_event(
                UpstreamFailure("upstream ended the stream before it was complete")))
        if not self._done.done():
            self._done.set_result(None)
