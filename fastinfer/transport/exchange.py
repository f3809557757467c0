"""One upstream HTTP exchange on a keep-alive pool.

Owns: framing the request, waiting for the answer (whole body, or for a 200
stream its first bytes), and handing a live stream on by callback. Knows
nothing of which replica or why: the caller passes the pool and URL.
"""
from __future__ import annotations

import asyncio

from ..errors import GatewayError, UpstreamFailure
from .reply import UpstreamReply, UpstreamStream
from .h1 import H1Connection, Sink, build_request
from .pool import Pool


class _Exchange(UpstreamStream, Sink):
    """The sink of one response: buffers until the caller has what it waits for.

    Once a stream is started, the connection hands the body straight to the
    stream's callback (``H1Connection.deliver_to``); only the end comes here.
    """

    __slots__ = ("conn", "want_stream", "status", "headers", "parts", "ready", "on_end_cb", "ended", "closed",
                 "end_error", "streaming")

    def __init__(self, conn: H1Connection, want_stream: bool):
        self.conn = conn
        self.want_stream = want_stream
        self.status = 0
        self.headers: dict = {}
        self.parts: list[bytes] = []
        self.ready = conn._loop.create_future()
        self.on_end_cb = None
        self.ended = False
        self.closed = False
        self.end_error: GatewayError | None = None
        self.streaming = False

    # ------------------------------------------------------------ sink side

    def on_head(self, status: int, headers: dict) -> None:
        self.status = status
        self.headers = headers
        self.streaming = self.want_stream and status == 200

    def on_data(self, data: bytes) -> None:
        self.parts.append(data)
        if self.streaming and not self.ready.done():
            self.ready.set_result(None)

    def on_whole(self, status: int, headers: dict, body: bytes) -> None:
        if self.want_stream and status == 200:      # a stream asked for and answered whole
            super().on_whole(status, headers, body)
            return
        self.ended = True
        if not self.ready.done():       # (cancelled: the caller left)
            self.ready.set_result(UpstreamReply(status, headers, body, None, None))   # the reply itself

    def on_end(self, error: GatewayError | None) -> None:
        self.ended = True
        self.end_error = error
        if self.on_end_cb is not None:
            self.on_end_cb(error)
        elif not self.ready.done():
            if error is not None:
                self.ready.set_exception(error)
            elif self.streaming and not self.parts:
                self.ready.set_exception(UpstreamFailure("upstream ended the stream before sending anything"))
            else:
                self.ready.set_result(None)

    # ---------------------------------------------------------- stream side

    def start(self, on_chunk, on_end) -> None:
        # bytes that came with or right after the first read are delivered first
        pending, self.parts = self.parts, []
        for data in pending:
            if self.closed:
                return  # the consumer closed the stream on what it was given
            on_chunk(data)
        if self.ended:
            on_end(self.end_error)
            return
        self.on_end_cb = on_end
        self.conn.deliver_to(on_chunk)

    def pause(self) -> None:
        self.conn.pause()

    def resume(self) -> None:
        self.conn.resume()

    def close(self) -> None:
        self.closed = True
        if not self.ended:
            self.ended = True
            self.conn.abort()


def request(pool: Pool, method: str, url: str, headers: dict, body: bytes, stream: bool, timeouts):
    """One exchange of any method, its head built for this call: the control calls' way (health probes,
    backend sessions). The data path keeps its heads (``Provider``) and calls ``exchange``."""
    return exchange(pool, build_request(method, pool.path_of(url), pool.host_header, headers, body), stream,
                    timeouts)


async def exchange(pool: Pool, framed: bytes, stream: bool, timeouts) -> UpstreamReply:
    """Send ``framed`` (a whole request: ``h1.build_request``, or ``h1.framed`` with a head the
    caller keeps) on one of ``pool``'s connections: a whole reply, or for a 200 stream its first bytes
    and the live rest."""
    conn = pool.kept_alive()
    while True:
        if conn is None:
            conn = await pool.connect(timeouts.connect_s)
        sink = _Exchange(conn, stream)
        conn.send(framed, sink, timeouts)
        try:
            reply = await sink.ready
            break
        except UpstreamFailure:
            # a kept-alive connection the upstream closed as we reused it: once more, on a new one
            # (another kept-alive one may be as stale; a new one is never ``reused``, so once)
            if conn.reused and not conn.got_bytes:
                conn = None
                continue
            raise
        except asyncio.CancelledError:
            sink.close()
            raise
    if reply is not None:       # a whole answer (``on_whole``)
        return reply
    if sink.streaming:
        first = sink.parts.pop(0)
        return UpstreamReply.streaming(first, sink, sink.headers)
    return UpstreamReply(sink.status, sink.headers, b"".join(sink.parts), None, None)
