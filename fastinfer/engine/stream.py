"""A relayed stream: upstream bytes through the format's relay into the client writer.

Owns: the per-chunk path of a streamed answer after the attempt loop chose it —
feeding each upstream read through the relay (translation, usage), writing the
result to the client without a task switch, pausing the upstream while the
client is slow, ending a failed stream with the caller's error event, holding
the event that finishes a stream for the response's end (one write with the
chunked terminator when the upstream's end came in the same read) — and the
end of the stream's attempt: how the stream ended (complete, cut, idle,
garbage, an upstream error event) is its attempt's verdict, recorded into the
breaker and the outcome metric before the client sees the end; a stream the
client left gets none, unless it left after its finishing bytes went out ahead
of the upstream's end (``delivered``: the OpenAI SDK closes at [DONE]), which
ends as that end would have. What the stream holds is given back exactly once.
Must not touch: aiohttp objects (the gateway passes a ``ClientWriter``),
retries, routing.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..errors import GatewayError, UpstreamFailure
from ..formats import StreamRelay
from ..observe import log_bug
from ..transport import UpstreamReply
from .attempt import SUCCESS, Attempt
from .classify import classify_exception, classify_stream_error

log = logging.getLogger("fastinfer.engine")


class ClientWriter(Protocol):
    """The gateway's side of a stream: synchronous, non-blocking writes."""

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client; False when its buffer is full (pause the upstream)."""

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""


class RelayedStream:
    """An upstream stream on its way to the client, relayed chunk by chunk by callback.

    Each upstream read goes through the format's relay (translation, usage)
    and straight to the client writer, with no task switch per chunk. A stream
    that fails after its first byte ends with the relay's error event.
    ``attempt`` is the attempt the stream came from: the stream ends it. ``loop`` is the worker's
    (on Python 3.11 each ``asyncio.get_running_loop()`` is a ``getpid`` syscall: two a stream).

    The bytes that finish the stream are held back: when the upstream's end
    follows in the same read (the usual case), the stream ends with them still
    held and the gateway sends them with the response's end (``take_ending``),
    one write instead of two; otherwise they go out on the next turn of the
    loop, as any chunk would have.
    """

    __slots__ = ("reply", "relay", "attempt", "provider", "_loop", "_on_done", "_before_end", "_client", "_done",
                 "_resumer", "_closed", "_ending", "_end_sent")

    def __init__(self, reply: UpstreamReply, relay: StreamRelay, attempt: Attempt, provider: str,
                 loop: asyncio.AbstractEventLoop):
        self.reply = reply
        self._loop = loop
        self.relay = relay
        self.attempt = attempt.hand_over()
        self.provider = provider            # the upstream kind, for classifying its error events
        self._on_done: list = []
        self._before_end: list = []
        self._client: ClientWriter | None = None
        self._done: asyncio.Future | None = None
        self._resumer: asyncio.Task | None = None
        self._closed = False
        self._ending = b""                  # the finishing bytes, held for the response's end
        self._end_sent = False              # they went out alone, before the upstream's end came

    async def pump(self, client: ClientWriter) -> None:
        """Relay the whole stream to ``client``; returns when it has ended either way."""
        self._client = client
        self._done = self._loop.create_future()
        try:
            self._on_chunk(self.reply.first)
            if not self._done.done():
                self.reply.stream.start(self._on_chunk, self._on_end)
            await self._done
        finally:
            self.close()

    def close(self) -> None:
        """End the stream's life: abort the upstream if unfinished, give back what it holds.

        Idempotent; the gateway calls it too, so a stream it never got to pump
        (the client left before the response head went out) leaks nothing. A
        stream closed before the upstream ended it was left by the client: its
        attempt gets no verdict, unless the client had the whole stream (``delivered``).
        """
        if self._closed:
            return
        self._closed = True
        self.reply.close()
        if self._resumer is not None:
            self._resumer.cancel()
        # a client that left after its whole stream (``delivered``) gets the verdict the upstream's
        # end would have given; ``_finish`` is once: a stream that ended has its verdict already
        self._finish(self._verdict(None)[0] if self._end_sent else None)

    def take_ending(self) -> bytes:
        """The bytes that finish the stream, still held once it has ended: the caller sends them
        with the response's end, in one write (b"" when they went out already)."""
        ending, self._ending = self._ending, b""
        return ending

    @property
    def delivered(self) -> bool:
        """The client was sent the whole stream, its finishing bytes included, before the upstream's
        end came: a client that leaves now (the OpenAI SDK closes its connection at [DONE]) left
        after its answer was complete."""
        return self._end_sent

    @property
    def failure(self) -> GatewayError | None:
        """Why the stream ended before it was complete (its attempt's error); None when it was
        complete, or is still running, or the client left."""
        verdict = self.attempt.verdict
        return None if verdict is None else verdict.error

    def also_on_done(self, callback) -> None:
        """Run ``callback`` when the stream has ended, however it ended (before its last bytes go out)."""
        self._on_done.append(callback)

    def also_before_end(self, callback) -> None:
        """Run ``callback`` once, before the client can see the stream's end: before the event that
        finishes it is written (the upstream's usage is known by then), or when it ends otherwise.
        The accounting of a request (usage, cost, limits) is complete before its last byte is sent."""
        self._before_end.append(callback)

    def _run_before_end(self) -> None:
        callbacks, self._before_end = self._before_end, []
        for callback in callbacks:
            callback()

    def _finish(self, verdict) -> None:
        """The attempt's verdict, then the rest of what the stream holds; once (``Attempt.end`` is once too)."""
        if self._before_end:
            self._run_before_end()
        self.attempt.end(verdict)
        callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            callback()

    def _on_chunk(self, chunk: bytes) -> None:
        relay = self.relay
        try:
            out = relay.feed(chunk)
        except Exception as e:
            # a stream event of a shape the relay cannot read: the stream cannot go on
            log_bug(log, "relaying an upstream stream failed", e)
            out, failure = b"", UpstreamFailure("the upstream's stream could not be read")
        else:
            failure = relay.failure
        if failure is not None:
            if out:
                self._client.write(out)
            self.reply.close()
            self._on_end(failure)
            return
        if relay.finished:
            if self._before_end:
                self._run_before_end()     # the end is in ``out``: account before the client sees it
            if out:
                self._hold_ending(out)
                return
        if self._ending:
            self._send_ending()        # more bytes after the end (a relay never makes them): in order
        if out and not self._client.write(out) and self._resumer is None:
            self.reply.stream.pause()
            self._resumer = self._loop.create_task(self._resume_when_drained())

    def _hold_ending(self, out: bytes) -> None:
        self._ending += out
        self._loop.call_soon(self._send_ending_unless_ended)

    def _send_ending_unless_ended(self) -> None:
        """The upstream's end did not come with the finishing bytes: they go out alone."""
        if not self._done.done():
            self._send_ending()
            self._end_sent = True

    def _send_ending(self) -> None:
        ending, self._ending = self._ending, b""
        if ending:
            self._client.write(ending)

    async def _resume_when_drained(self) -> None:
        await self._client.drain()
        self._resumer = None
        self.reply.stream.resume()

    def _on_end(self, error: GatewayError | None) -> None:
        """The upstream side ended: ``error`` is why, None when the upstream closed it (properly or not)."""
        if self._done.done():
            return
        verdict, tail = self._verdict(error)
        # accounting is complete before the client sees the end of its stream
        self._finish(verdict)
        if tail is not None:
            self._send_ending()     # what the relay finished with, then why the stream failed after it
            self._client.write(tail)
        self._done.set_result(None)

    def _verdict(self, error: GatewayError | None):
        """The attempt's verdict for a stream whose upstream side ended (``error``: why, None when the
        upstream closed it), and the event that tells the client why it failed (None if it did not)."""
        relay = self.relay
        if relay.error is not None:
            # the upstream's own error event, already passed on in the caller's format
            return classify_stream_error(relay.error, self.provider), None
        if error is None and not relay.finished:
            error = UpstreamFailure("upstream ended the stream before it was complete")
        if error is None:
            return SUCCESS, None
        return classify_exception(error), relay.error_event(error)
