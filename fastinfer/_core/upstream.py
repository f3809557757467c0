# cython: language_level=3, annotation_typing=False
"""The upstream HTTP/1.1 connection, its exchange's sink, a pool's kept-alive connections and the
reply: plain Python, and compiled as it is with the types of ``upstream.pxd`` (Cython's pure-Python
mode). The gateway runs the compiled module; the tests run the transport's suite over it and over
this source run as Python (``fastinfer._core.ref.upstream`` loads it so): one text, no twin to
drift. Compiled, the connection, its sink and the kept-alive list call each other in C several
times a request (the send, the read, the answer read whole, the reply, the release: a dozen Python
calls a request before), and their fields are C fields. Names the ``.pxd`` declares ``cdef`` are
not callable from Python once compiled: the public methods are the ones without an underscore.

A lean HTTP/1.1 client connection: llhttp framing, callback-driven bodies. Why not aiohttp's
client: a streamed token costs aiohttp a StreamReader feed, a future, a task wake-up and a timer
reschedule per chunk. Here the response is framed by llhttp (``httptools.HttpResponseParser``, as
uvicorn and aiohttp use it) inside ``data_received``, and the body that one read brought is handed
to the sink synchronously, as one piece, so a relayed stream chunk goes socket -> sink -> client
socket with no task switch. Timeouts use one lazy watchdog timer per exchange: it is armed once and
only re-armed when it fires early, so a chunk costs a ``loop.time()`` read, not a timer reschedule.

An answer that comes whole in one read with a plain head (the usual non-streamed answer) is read
by ``_core.heads.whole_response`` in one compiled pass instead: llhttp's callbacks cost a Python
call per field. A chunked answer (a stream) whose plain head comes whole in its first read is read
by ``_core.heads.chunked_head``, and its body by a ``ChunkedBody``: one compiled call per read
gives the read's data as one piece, where llhttp calls back once per chunk.

Nothing raises out of ``data_received``: malformed bytes (a bad ``Content-Length``, an overlong
chunk-size line, a broken head), a protocol switch, even a sink that raises, end that exchange with
an ``UpstreamFailure`` and drop the connection.

Owns: one connection's exchanges (request framing, response framing, reuse), connect / first-byte
/ idle / total timeouts; ``Exchange``, the sink that waits for what the caller waits for (a whole
answer, or a stream's first bytes) and then hands the live stream on; ``KeptAlive``, a pool's
kept-alive connections; ``UpstreamReply``. The connection's states are the named constants of
``_core.states``. Must not touch: what the body means (``formats`` and the engine decide), which
pool or replica (``transport.pool``, ``session``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from ..errors import ClientTooSlow, GatewayError, UpstreamFailure, UpstreamTimeout
from ..observe import log_bug
from .states import (AWAITING_HEAD, CHUNKED, DONE, END, FAIL, HEAD, IDLE, LENGTH, MAX_FRAMING, MAX_HEAD,
                      RECEIVING_BODY, RELEASE, SEND, UNTIL_CLOSE)
from .heads import ChunkedBody, chunked_head, whole_response

log = logging.getLogger("fastinfer.transport")


class UpstreamReply:
    """What an exchange hands back: a status, headers, and a whole body or a 200 stream's first bytes
    and the live rest (a ``transport.UpstreamStream``)."""

    def __init__(self, status: int, headers, body: bytes | None, first: bytes | None, stream):
        self.status = status
        self.headers = headers
        self.body = body
        self.first = first
        self.stream = stream

    @staticmethod
    def complete(status: int, body: bytes, headers=None) -> "UpstreamReply":
        return UpstreamReply(status, {} if headers is None else headers, body, None, None)

    @staticmethod
    def streaming(first: bytes, stream, headers=None) -> "UpstreamReply":
        """A 200 stream whose first bytes have arrived (so failures before them can be retried)."""
        return UpstreamReply(200, {} if headers is None else headers, None, first, stream)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


class KeptAlive:
    """A pool's kept-alive connections, newest last: ``take`` one for an exchange, ``keep`` one whose
    exchange is complete (``transport.pool`` says how many and for how long)."""

    def __init__(self, max_idle: int, idle_timeout_s: float):
        self.idle: list[H1Connection] = []
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self.closed = False

    def take(self) -> "H1Connection | None":
        """A kept-alive connection ready for an exchange (marked ``reused``), or None; the stale ones
        found on the way (closed by the upstream, or idle for ``idle_timeout_s``) are closed."""
        while self.idle:
            conn = self.idle.pop()
            if conn._reusable() and conn._time() - conn.idle_since < self.idle_timeout_s:
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    def keep(self, conn: "H1Connection", reusable: bool) -> None:
        """``conn``'s exchange is complete: kept for the next one if it may be reused and there is room."""
        if reusable and not self.closed and conn.transport is not None and len(self.idle) < self.max_idle:
            conn._released()
            self.idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def forget(self, conn: "H1Connection") -> None:
        """``conn``'s socket went: not kept any more."""
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """Close every kept connection, and keep none from now on."""
        self.closed = True
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


class _AfterTheEnd(Exception):
    """Raised from a parser callback to stop parsing: bytes came after the final response ended."""


class H1Connection:
    """An asyncio protocol (as such: a compiled class cannot inherit ``asyncio.Protocol``) for one
    connection to an upstream, one exchange at a time; its ``pool`` (``transport.h1.Owner``) is told
    when an exchange ends and when the socket goes."""

    def __init__(self, pool, loop: asyncio.AbstractEventLoop):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink = None                  # the current exchange's ``transport.h1.Sink``
        self.reused = False
        self.state = IDLE
        self.got_bytes = False            # any byte of the current exchange's answer arrived
        self._loop = loop
        # the loop's clock, bound once: read on every read of an answer (the idle timeout's) and every
        # request, where ``self._loop.time()`` looked the method up by name each time
        self._time = loop.time
        self._on_data: Callable[[bytes], None] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._framing = None
        self._head_ready = False
        self._keep_alive = True
        self._paused = False             # reading paused for a slow client (``pause``)
        self._piece: bytes | None = None  # the body one read brought: one piece, or ...
        self._pieces: list[bytes] | None = None  # ... several, joined before they go to the sink
        self._chunks: ChunkedBody | None = None  # the body being read without llhttp (``chunked_head``)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self.idle_since = 0.0         # when it went back to the pool (loop time): the pool's idle timeout
        # llhttp's parser, made when an answer first needs it (most never do: ``whole_response``,
        # ``chunked_head``), then kept for the connection's life (it starts afresh after each
        # complete response). It holds this connection: made at once, every connection that never
        # connected was a cycle for the GC
        self._parser = None

    # ------------------------------------------------------------ exchange

    def send(self, request: bytes, sink, timeouts) -> None:
        """Write ``request`` (head and body, one write) and deliver its response to ``sink`` (a
        ``transport.h1.Sink``), within ``timeouts`` (a ``transport.h1.Timeouts``)."""
        self._send(request, sink, timeouts)

    def exchange(self, request: bytes, want_stream: bool, timeouts) -> "Exchange":
        """Send ``request`` with an ``Exchange`` as its sink, and return the sink: its ``ready``
        future has the answer (``transport.exchange`` awaits it)."""
        sink = Exchange(self, want_stream)
        self._send(request, sink, timeouts)
        return sink

    def _send(self, request: bytes, sink, timeouts) -> None:
        loop = self._loop
        now = self._time()
        self.state = self.state.moves[SEND]
        self.sink = sink
        self._on_data = sink.on_data
        self.got_bytes = False
        self._head_ready = False
        self._keep_alive = True
        self._unframed = 0
        self._chunks = None
        self._last_io = now
        self._paused = False
        self._timeouts = timeouts
        self._deadline = now + timeouts.total_s
        # armed for the shortest limit: it re-arms itself for whichever phase the exchange is in. A
        # timer left from the last exchange that fires no later is kept (it checks, and re-arms):
        # on a busy connection a timer is made once per limit's length, not once per request
        due = now + min(timeouts.first_byte_s, timeouts.idle_s, timeouts.total_s)
        if self._timer is None or self._timer_due > due:
            self._cancel_timer()
            self._timer = loop.call_at(due, self._watchdog)
            self._timer_due = due
        self.transport.write(request)

    def deliver_to(self, on_data: Callable[[bytes], None]) -> None:
        """Send the rest of the body straight to ``on_data`` (one call less per read than via the sink)."""
        self._on_data = on_data

    def pause(self) -> None:
        """Stop reading (the client reads slower than the upstream sends): the time until ``resume``
        is the gateway's own wait, never the upstream's silence (``_watchdog``)."""
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        self._last_io = self._time()       # the idle clock restarts when the gateway reads again
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the exchange now: the upstream sees the connection close."""
        self.sink = None
        self._on_data = None        # the sink's (or its stream's) bound method: it holds the exchange
        self.state = self.state.moves[FAIL]
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None
        self._cancel_timer()        # an idle connection's watchdog would keep it alive until it fired
        self.pool.forget(self)
        if self.sink is None:
            self.state = self.state.moves[FAIL]
        elif self.state is RECEIVING_BODY and self._framing is UNTIL_CLOSE:
            self.state = self.state.moves[END]   # the close is this body's end
            self._finish()
        else:
            self._fail(UpstreamFailure("upstream closed the connection" + (" mid-stream" if self.got_bytes else "")))
        # llhttp's parser holds this connection (its callbacks): let it go with the connection, or
        # every connection that ends (cut, refused, idle too long) waits for the cyclic GC
        self._parser = None

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost reports the outcome

    def pause_writing(self) -> None:
        pass    # a request is one small write: nothing waits for the upstream to read it

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # bytes on a connection with no exchange: the upstream is out of step, never reuse it
            self.state = self.state.moves[FAIL]
            self.transport.abort()
            return
        self._last_io = self._time()
        self.got_bytes = True
        self._unframed += len(data)
        try:
            chunks, start = self._chunks, 0
            if chunks is None:
                if self.state is AWAITING_HEAD and self._unframed == len(data):   # the answer's first read
                    whole = whole_response(data)
                    if whole is not None:
                        self._take_whole(sink, data, whole)
                        return
                    head = chunked_head(data)
                    if head is not None:    # a stream: llhttp never sees this exchange, a ChunkedBody reads it
                        status, headers, start, keep_alive = head
                        chunks = self._chunks = ChunkedBody(MAX_FRAMING)
                        if not self._head_read(sink, status, headers, CHUNKED, keep_alive):
                            return  # the sink aborted on the head
                if chunks is None:
                    self._read_by_llhttp(sink, data)
                    return
            self._read_chunked(chunks, data, start)
        except Exception as e:
            # a sink that raised: the exchange cannot go on, but the event loop must not see it
            log_bug(log, "reading an upstream answer failed", e)
            self._piece = self._pieces = None
            if self.sink is not None:
                self._fail(UpstreamFailure("the gateway could not read the upstream's answer"))

    def _read_chunked(self, chunks: ChunkedBody, data: bytes, start: int) -> None:
        """A read of a chunked body, ``data[start:]``, without llhttp: a stream's every read. (Its own
        method, a C call compiled: ``chunks`` typed, its ``feed`` and ``done`` are C calls and reads.)"""
        try:
            piece = chunks.feed(data, start)
        except ValueError as e:
            self._fail(UpstreamFailure(_chunked_failure(str(e))))
            return
        if piece:
            self._on_data(piece)
            if self.sink is None:
                return  # the sink aborted on the data
        if chunks.done:
            self._chunks = None
            if chunks.overflowed:
                self._keep_alive = False  # bytes after the end of the answer: done, but never reused
            self.state = self.state.moves[END]
            self._finish()

    def _read_by_llhttp(self, sink, data: bytes) -> None:
        """A read of an answer outside the compiled readers' subset, framed by llhttp's callbacks."""
        error = None
        try:
            parser = self._parser
            if parser is None:
                parser = self._parser = HttpResponseParser(self)
            parser.feed_data(data)
        except (_AfterTheEnd, HttpParserError, HttpParserUpgrade) as e:
            error = self._parse_error(e)
        if self._head_ready:
            self._head_ready = False
            sink.on_head(self._status, self._headers)
            if self.sink is None:
                return  # the sink aborted on the head
        piece = self._piece
        if piece is not None:
            if self._pieces is not None:
                piece = b"".join(self._pieces)
                self._pieces = None
            self._piece = None
            self._on_data(piece)
            if self.sink is None:
                return  # the sink aborted on the data
        if error is not None:
            self._fail(UpstreamFailure(error))
        elif self.state is DONE:
            self._finish()
        elif self._unframed > (MAX_HEAD if self.state is AWAITING_HEAD else MAX_FRAMING):
            self._fail(UpstreamFailure("upstream sent an oversized response head" if self.state is AWAITING_HEAD
                                       else "upstream sent an overlong chunk-size line or trailer"))

    def _take_whole(self, sink, data: bytes, whole: tuple) -> None:
        """An answer that came whole in one read, read by ``whole_response`` instead of llhttp (which
        has seen none of it, so it stays at a message's start; ``whole``: status, headers, where the
        body starts, keep-alive): the sink has all of it in one call, then the connection goes back
        to the pool. (A sink that raises fails the exchange, as any sink's data does; one that
        aborted keeps the connection from the pool.)"""
        status, headers, body_start, keep_alive = whole
        self.state = self.state.moves[HEAD].moves[END]
        self._status = status
        self._headers = headers
        self._framing = LENGTH
        if type(sink) is Exchange:
            exchange = sink         # typed (``upstream.pxd``): a C call
            exchange._on_whole(status, headers, data[body_start:])
        else:
            sink.on_whole(status, headers, data[body_start:])
        if self.sink is None:
            return  # the sink aborted
        self.sink = self._on_data = None
        self.pool.release(self, keep_alive and self._keep_alive)

    def _head_read(self, sink, status: int, headers: dict[str, str], framing, keep_alive: bool) -> bool:
        """A head read without llhttp, to the sink; False when the sink aborted on it."""
        self._headers = headers
        self._framing = framing
        self._status = status
        self.state = self.state.moves[HEAD]
        if not keep_alive:
            self._keep_alive = False
        sink.on_head(status, headers)
        return self.sink is not None

    def _parse_error(self, e: Exception) -> str | None:
        """What a stop of the parser means; None when the answer was complete before it."""
        if self.state is DONE:
            self._keep_alive = False  # bytes after the end of the answer: done, but never reused
            return None
        if isinstance(e, HttpParserUpgrade):
            return "upstream switched protocols"
        if self.state is RECEIVING_BODY and self._framing is CHUNKED:
            return f"upstream sent malformed chunked encoding ({e})"
        return f"upstream sent a malformed HTTP response ({e})"

    # ------------------------------------------------------- llhttp callbacks

    def on_message_begin(self) -> None:
        if self.state is not AWAITING_HEAD:
            raise _AfterTheEnd
        self._headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state is AWAITING_HEAD:  # trailers (after the body) are read and dropped
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real head follows
        headers = self._headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing = CHUNKED
        elif "content-length" in headers or status in (204, 304):
            self._framing = LENGTH
        else:
            self._framing = UNTIL_CLOSE
            self._keep_alive = False
        self._status = status
        self._head_ready = True
        self._unframed = 0
        self.state = self.state.moves[HEAD]

    def on_body(self, body: bytes) -> None:
        self._unframed = 0
        if self._piece is None:
            self._piece = body
        elif self._pieces is None:
            self._pieces = [self._piece, body]
        else:
            self._pieces.append(body)

    def on_message_complete(self) -> None:
        if self.state is AWAITING_HEAD:
            return  # the end of an interim answer
        if not self._parser.should_keep_alive():
            self._keep_alive = False
        self.state = self.state.moves[END]

    # ------------------------------------------------------------- endings

    def _watchdog(self) -> None:
        self._timer = None
        if self.sink is None:
            return
        now = self._time()
        t = self._timeouts
        if now >= self._deadline:
            if self._paused:        # the gateway stopped reading for its client: the time ran out there
                return self._timed_out(ClientTooSlow(
                    f"the stream passed the total timeout of {t.total_s:g}s while the client read it "
                    f"slower than the upstream sent it"))
            return self._timed_out(UpstreamTimeout(f"upstream exceeded the total timeout of {t.total_s:g}s"))
        if self._paused:
            self._last_io = now     # not reading: a slow client's wait is not the upstream's silence
        if self.state is RECEIVING_BODY:
            limit, what = t.idle_s, f"upstream stream idle for more than {t.idle_s:g}s"
        else:
            limit, what = t.first_byte_s, f"upstream did not answer within {t.first_byte_s:g}s"
        due = self._last_io + limit
        if now >= due:
            return self._timed_out(UpstreamTimeout(what))
        self._timer_due = min(due, self._deadline)
        self._timer = self._loop.call_at(self._timer_due, self._watchdog)

    def _timed_out(self, error: GatewayError) -> None:
        sink = self.sink
        self.abort()
        _tell_end(sink, error)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self) -> None:
        sink, self.sink = self.sink, None
        self._on_data = None        # the watchdog stays armed for the next exchange (``send``)
        self.pool.release(self, self._keep_alive)
        _tell_end(sink, None)

    def _fail(self, error: GatewayError) -> None:
        sink, self.sink = self.sink, None
        self._on_data = None
        self.state = self.state.moves[FAIL]
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        _tell_end(sink, error)

    def _released(self) -> None:
        """Back in the pool after a complete exchange (``KeptAlive.keep``)."""
        self.state = self.state.moves[RELEASE]
        self.idle_since = self._time()

    @property
    def reusable(self) -> bool:
        """Idle, its socket open: ready for the next exchange."""
        return self._reusable()

    def _reusable(self) -> bool:
        return self.state is IDLE and self.transport is not None and not self.transport.is_closing()


def _chunked_failure(message: str) -> str:
    """Why a ``ChunkedBody`` refused a read, as the exchange's failure says it (llhttp's words)."""
    if message.startswith("overlong"):
        return "upstream sent an " + message
    return f"upstream sent malformed chunked encoding ({message})"


def _labelled_json(content_type) -> bool:
    """Whether an answer's content type names JSON, parameters and case aside
    (``Application/JSON; charset=utf-8``). An event stream's label, nearly every streamed answer's,
    is told at its start, so most streamed answers' labels are never split or lower-cased."""
    if content_type.startswith("text/event-stream"):
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _tell_end(sink, error: GatewayError | None) -> None:
    """The exchange's end, to its sink; the end also comes from timers and ``connection_lost``,
    where a sink that raised would reach the event loop."""
    try:
        if type(sink) is Exchange:
            exchange = sink         # typed (``upstream.pxd``): a C call
            exchange._on_end(error)
        else:
            sink.on_end(error)
    except Exception as e:
        log_bug(log, "ending an upstream exchange failed", e)


class Exchange:
    """The sink of one response (a ``transport.h1.Sink``): buffers until the caller has what it waits
    for. Then, for a stream, it is the live rest (a ``transport.UpstreamStream``): once started, the
    connection hands the body straight to the stream's callback (``H1Connection.deliver_to``); only
    the end comes here.
    """

    def __init__(self, conn: H1Connection, want_stream: bool):
        self.conn = conn
        self.want_stream = want_stream
        self.status = 0
        self.headers: dict = {}
        self.parts: list[bytes] = []
        self.ready = self.conn._loop.create_future()   # (``self.conn``: typed, so compiled a C field)
        self.on_end_cb = None
        self.ended = False
        self.closed = False
        self.end_error: GatewayError | None = None
        self.streaming = False

    # ------------------------------------------------------------ sink side

    def on_head(self, status: int, headers: dict) -> None:
        self.status = status
        self.headers = headers
        # a JSON body is a whole answer even to a stream request (an upstream that cannot stream the
        # endpoint): read whole, so the engine can fail the attempt before the client sees a 200
        self.streaming = self.want_stream and status == 200 and not _labelled_json(headers.get("content-type", ""))

    def on_data(self, data: bytes) -> None:
        self.parts.append(data)
        if self.streaming and not self.ready.done():
            self.ready.set_result(None)

    def on_whole(self, status: int, headers: dict, body: bytes) -> None:
        self._on_whole(status, headers, body)

    def _on_whole(self, status: int, headers: dict, body: bytes) -> None:
        if self.want_stream and status == 200:      # a stream asked for and answered in one read
            self.on_head(status, headers)
            if body:
                self.on_data(body)
            self._on_end(None)
            return
        self.ended = True
        if not self.ready.done():       # (cancelled: the caller left)
            self.ready.set_result(UpstreamReply(status, headers, body, None, None))   # the reply itself

    def on_end(self, error: GatewayError | None) -> None:
        self._on_end(error)

    def _on_end(self, error: GatewayError | None) -> None:
        self.ended = True
        self.end_error = error
        # told once, and let go: the callback is the stream's (a bound method), which holds the reply
        # that holds this exchange; kept, the cycle would wait for the cyclic GC to free the stream
        on_end, self.on_end_cb = self.on_end_cb, None
        if on_end is not None:
            on_end(error)
        elif not self.ready.done():
            if error is not None:
                self.ready.set_exception(error)
            elif self.streaming and not self.parts:
                self.ready.set_exception(UpstreamFailure("upstream ended the stream before sending anything"))
            else:
                self.ready.set_result(None)

    def reply(self) -> UpstreamReply:
        """The answer, once ``ready`` is done without one of its own: a 200 stream's first bytes and
        the live rest (this sink), or a body that came in more than one read."""
        if self.streaming:
            return UpstreamReply.streaming(self.parts.pop(0), self, self.headers)
        body = b"".join(self.parts)
        if self.want_stream and self.status == 200 and body.lstrip()[:1] in (b"d", b"e", b":"):
            # an event stream labelled JSON: relayed as the stream it is, whole (it has ended)
            self.parts = []
            self.streaming = True
            return UpstreamReply.streaming(body, self, self.headers)
        return UpstreamReply(self.status, self.headers, body, None, None)

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
        self.on_end_cb = None       # closed by its consumer, which ends itself: no end is told
        if not self.ended:
            self.ended = True
            self.conn.abort()


__all__ = ["Exchange", "H1Connection", "KeptAlive", "UpstreamReply"]


# what the engine reads of a reply, at the speed of a __slots__ field (``slots.h``), compiled only (``cython.compiled`` would
# import Cython at run time; run as Python, ``__file__`` is this .py)
if not __file__.endswith(".py"):
    from cython.cimports.fastinfer._core.slots import fi_readonly_slots
    fi_readonly_slots(UpstreamReply, ("status", "headers", "body", "first", "stream"))
    fi_readonly_slots(Exchange, ("ready",))     # ``transport.exchange`` awaits it on every request
