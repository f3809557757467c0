# cython: language_level=3, boundscheck=False, wraparound=False
"""The upstream HTTP/1.1 connection and its exchange's sink, compiled: runs once or more per request.

``H1Connection`` is an asyncio protocol that frames one upstream answer at a time: a plain answer
that came whole in one read by ``heads.whole_response``, a chunked one (a stream) by
``heads.chunked_head`` and a ``ChunkedBody``, anything else by llhttp's callbacks; bodies go to the
exchange's sink as they come, timeouts are one lazy watchdog timer. ``Exchange`` is the sink the
gateway's calls use: it holds what the caller awaits (``ready``: a whole answer, or a stream's
first bytes) and then hands the live stream on. What each step does and why is written in the
plain-Python reference, ``fastinfer._core.ref.upstream``, line for line the same; the transport's
tests run over both.

Why compiled: an exchange is about 400 interpreted opcodes a request spread over a dozen calls
between the connection, its sink and the pool's loop (send, the read, the answer read whole, the
reply, the release); typed, the connection and its sink call each other in C, and their fields
are C fields.

Owns: one connection's exchanges, its timeouts, an exchange's sink. Must not touch: what the body
means, which connection (``transport.pool``), retries.
"""
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from ..errors import UpstreamFailure, UpstreamTimeout
from ..observe import log_bug
from .states import (AWAITING_HEAD, CHUNKED, DONE, END, FAIL, HEAD, IDLE, LENGTH, MAX_FRAMING, MAX_HEAD,
                     RECEIVING_BODY, RELEASE, SEND, UNTIL_CLOSE)
from .heads import ChunkedBody, chunked_head, whole_response

import logging

log = logging.getLogger("fastinfer.transport")

__all__ = ["Exchange", "H1Connection", "KeptAlive", "UpstreamReply"]


cdef class UpstreamReply:
    """What an exchange hands back: a status, headers, and a whole body or a 200 stream's first bytes
    and the live rest (an ``UpstreamStream``)."""
    cdef public object status, headers, body, first, stream

    def __init__(self, status, headers, body, first, stream):
        self.status = status
        self.headers = headers
        self.body = body
        self.first = first
        self.stream = stream

    @staticmethod
    def complete(status, body, headers=None):
        return UpstreamReply(status, headers or {}, body, None, None)

    @staticmethod
    def streaming(first, stream, headers=None):
        return UpstreamReply(200, headers or {}, None, first, stream)

    def close(self):
        if self.stream is not None:
            self.stream.close()


cdef class KeptAlive:
    """A pool's kept-alive connections, newest last: ``take`` one for an exchange, ``keep`` one whose
    exchange is complete (``transport.pool`` says how many and for how long)."""
    cdef readonly list idle
    cdef Py_ssize_t max_idle
    cdef double idle_timeout_s
    cdef bint closed

    def __init__(self, Py_ssize_t max_idle, double idle_timeout_s):
        self.idle = []
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self.closed = False

    def take(self):
        cdef H1Connection conn
        cdef double now
        while self.idle:
            conn = self.idle.pop()
            now = conn._loop.time()
            if conn._reusable() and now - conn.idle_since < self.idle_timeout_s:
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    def keep(self, H1Connection conn not None, bint reusable):
        if reusable and not self.closed and conn.transport is not None and len(self.idle) < self.max_idle:
            conn._released()
            self.idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def forget(self, conn):
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self):
        self.closed = True
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


class _AfterTheEnd(Exception):
    """Raised from a parser callback to stop parsing: bytes came after the final response ended."""


cdef class H1Connection:
    cdef public object pool, transport, sink, state, _parser, _timer
    cdef public bint reused, got_bytes
    cdef public double idle_since
    cdef object _loop, _on_data, _status, _headers, _framing, _piece, _pieces, _chunks, _timeouts
    cdef bint _head_ready, _keep_alive
    cdef Py_ssize_t _unframed
    cdef double _last_io, _deadline, _timer_due

    def __init__(self, pool, loop):
        self.pool = pool
        self.transport = None
        self.sink = None
        self.reused = False
        self.state = IDLE
        self.got_bytes = False
        self._loop = loop
        self._on_data = None
        self._status = 0
        self._headers = {}
        self._framing = None
        self._head_ready = False
        self._keep_alive = True
        self._piece = None
        self._pieces = None
        self._chunks = None
        self._timer = None
        self._timer_due = 0.0
        self.idle_since = 0.0
        self._parser = HttpResponseParser(self)

    # ------------------------------------------------------------ exchange

    def send(self, bytes request not None, sink, timeouts):
        self._send(request, sink, timeouts)

    def exchange(self, bytes request not None, bint want_stream, timeouts):
        cdef Exchange sink = Exchange(self, want_stream)
        self._send(request, sink, timeouts)
        return sink

    cdef _send(self, bytes request, sink, timeouts):
        cdef object loop = self._loop
        cdef double now = loop.time()
        cdef double total_s = timeouts.total_s
        cdef double due = now + min(<double>timeouts.first_byte_s, <double>timeouts.idle_s, total_s)
        self.state = self.state.moves[SEND]
        self.sink = sink
        self._on_data = sink.on_data
        self.got_bytes = False
        self._head_ready = False
        self._keep_alive = True
        self._unframed = 0
        self._chunks = None
        self._last_io = now
        self._timeouts = timeouts
        self._deadline = now + total_s
        if self._timer is None or self._timer_due > due:
            self._cancel_timer()
            self._timer = loop.call_at(due, self._watchdog)
            self._timer_due = due
        self.transport.write(request)

    def deliver_to(self, on_data):
        self._on_data = on_data

    def pause(self):
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self):
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self):
        self.sink = None
        self.state = self.state.moves[FAIL]
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.transport = None
        self._cancel_timer()
        self.pool.forget(self)
        if self.sink is None:
            self.state = self.state.moves[FAIL]
        elif self.state is RECEIVING_BODY and self._framing is UNTIL_CLOSE:
            self.state = self.state.moves[END]
            self._finish()
        else:
            self._fail(UpstreamFailure("upstream closed the connection" + (" mid-stream" if self.got_bytes else "")))

    def eof_received(self):
        return False

    def pause_writing(self):
        pass    # requests are one small write each: nothing waits on the upstream's reading

    def resume_writing(self):
        pass

    def data_received(self, bytes data):
        cdef object sink = self.sink
        cdef object chunks, whole, head, piece
        cdef Py_ssize_t start = 0
        if sink is None:
            self.state = self.state.moves[FAIL]
            self.transport.abort()
            return
        self._last_io = self._loop.time()
        self.got_bytes = True
        self._unframed += len(data)
        try:
            chunks = self._chunks
            if chunks is None:
                if self.state is AWAITING_HEAD and self._unframed == len(data):
                    whole = whole_response(data)
                    if whole is not None:
                        self._take_whole(sink, data, whole)
                        return
                    head = chunked_head(data)
                    if head is not None:
                        status, headers, start, keep_alive = head
                        chunks = self._chunks = ChunkedBody(MAX_FRAMING)
                        if not self._head_read(sink, status, headers, CHUNKED, keep_alive):
                            return
                if chunks is None:
                    self._read_by_llhttp(sink, data)
                    return
            try:
                piece = chunks.feed(data, start)
            except ValueError as e:
                self._fail(UpstreamFailure(_chunked_failure(str(e))))
                return
            if piece:
                self._on_data(piece)
                if self.sink is None:
                    return
            if chunks.done:
                self._chunks = None
                if chunks.overflowed:
                    self._keep_alive = False
                self.state = self.state.moves[END]
                self._finish()
        except Exception as e:
            log_bug(log, "reading an upstream answer failed", e)
            self._piece = self._pieces = None
            if self.sink is not None:
                self._fail(UpstreamFailure("the gateway could not read the upstream's answer"))

    cdef _read_by_llhttp(self, sink, bytes data):
        error = None
        try:
            self._parser.feed_data(data)
        except (_AfterTheEnd, HttpParserError, HttpParserUpgrade) as e:
            error = self._parse_error(e)
        if self._head_ready:
            self._head_ready = False
            sink.on_head(self._status, self._headers)
            if self.sink is None:
                return
        piece = self._piece
        if piece is not None:
            if self._pieces is not None:
                piece = b"".join(self._pieces)
                self._pieces = None
            self._piece = None
            self._on_data(piece)
            if self.sink is None:
                return
        if error is not None:
            self._fail(UpstreamFailure(error))
        elif self.state is DONE:
            self._finish()
        elif self._unframed > (MAX_HEAD if self.state is AWAITING_HEAD else MAX_FRAMING):
            self._fail(UpstreamFailure("upstream sent an oversized response head" if self.state is AWAITING_HEAD
                                       else "upstream sent an overlong chunk-size line or trailer"))

    cdef _take_whole(self, sink, bytes data, tuple whole):
        cdef Py_ssize_t body_start = whole[2]
        cdef bint keep_alive = whole[3]
        status, headers = whole[0], whole[1]
        self.state = self.state.moves[HEAD].moves[END]
        self._status = status
        self._headers = headers
        self._framing = LENGTH
        if type(sink) is Exchange:
            (<Exchange>sink)._on_whole(status, headers, data[body_start:])
        else:
            sink.on_whole(status, headers, data[body_start:])
        if self.sink is None:
            return
        self.sink = self._on_data = None
        self.pool.release(self, keep_alive and self._keep_alive)

    cdef bint _head_read(self, sink, status, headers, framing, bint keep_alive) except -1:
        self._headers = headers
        self._framing = framing
        self._status = status
        self.state = self.state.moves[HEAD]
        if not keep_alive:
            self._keep_alive = False
        sink.on_head(status, headers)
        return self.sink is not None

    cdef _parse_error(self, e):
        if self.state is DONE:
            self._keep_alive = False
            return None
        if isinstance(e, HttpParserUpgrade):
            return "upstream switched protocols"
        if self.state is RECEIVING_BODY and self._framing is CHUNKED:
            return f"upstream sent malformed chunked encoding ({e})"
        return f"upstream sent a malformed HTTP response ({e})"

    # ------------------------------------------------------- llhttp callbacks

    def on_message_begin(self):
        if self.state is not AWAITING_HEAD:
            raise _AfterTheEnd
        self._headers = {}

    def on_header(self, bytes name, bytes value):
        if self.state is AWAITING_HEAD:
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self):
        status = self._parser.get_status_code()
        if status < 200:
            return
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

    def on_body(self, bytes body):
        self._unframed = 0
        if self._piece is None:
            self._piece = body
        elif self._pieces is None:
            self._pieces = [self._piece, body]
        else:
            self._pieces.append(body)

    def on_message_complete(self):
        if self.state is AWAITING_HEAD:
            return
        if not self._parser.should_keep_alive():
            self._keep_alive = False
        self.state = self.state.moves[END]

    # ------------------------------------------------------------- endings

    def _watchdog(self):
        self._timer = None
        if self.sink is None:
            return
        cdef double now = self._loop.time()
        cdef double limit, due
        t = self._timeouts
        if now >= self._deadline:
            self._timed_out(f"upstream exceeded the total timeout of {t.total_s:g}s")
            return
        if self.state is RECEIVING_BODY:
            limit, what = t.idle_s, f"upstream stream idle for more than {t.idle_s:g}s"
        else:
            limit, what = t.first_byte_s, f"upstream did not answer within {t.first_byte_s:g}s"
        due = self._last_io + limit
        if now >= due:
            self._timed_out(what)
            return
        self._timer_due = min(due, self._deadline)
        self._timer = self._loop.call_at(self._timer_due, self._watchdog)

    cdef _timed_out(self, str message):
        sink = self.sink
        self.abort()
        _tell_end(sink, UpstreamTimeout(message))

    cdef _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    cdef _finish(self):
        sink, self.sink = self.sink, None
        self._on_data = None
        self.pool.release(self, self._keep_alive)
        _tell_end(sink, None)

    cdef _fail(self, error):
        sink, self.sink = self.sink, None
        self._on_data = None
        self.state = self.state.moves[FAIL]
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        _tell_end(sink, error)

    def released(self):
        self._released()

    cdef _released(self):
        self.state = self.state.moves[RELEASE]
        self.idle_since = self._loop.time()

    @property
    def reusable(self):
        return self._reusable()

    cdef bint _reusable(self) except -1:
        return self.state is IDLE and self.transport is not None and not self.transport.is_closing()


def _chunked_failure(str message):
    if message.startswith("overlong"):
        return "upstream sent an " + message
    return f"upstream sent malformed chunked encoding ({message})"


cdef _tell_end(sink, error):
    try:
        if type(sink) is Exchange:
            (<Exchange>sink)._on_end(error)
        else:
            sink.on_end(error)
    except Exception as e:
        log_bug(log, "ending an upstream exchange failed", e)


cdef class Exchange:
    cdef readonly H1Connection conn
    cdef readonly bint want_stream, streaming, ended, closed
    cdef readonly object status, headers, end_error, ready
    cdef public list parts
    cdef object on_end_cb

    def __init__(self, H1Connection conn not None, bint want_stream):
        self.conn = conn
        self.want_stream = want_stream
        self.status = 0
        self.headers = {}
        self.parts = []
        self.ready = conn._loop.create_future()
        self.on_end_cb = None
        self.ended = False
        self.closed = False
        self.end_error = None
        self.streaming = False

    # ------------------------------------------------------------ sink side

    def on_head(self, status, headers):
        self.status = status
        self.headers = headers
        self.streaming = self.want_stream and status == 200

    def on_data(self, bytes data):
        self.parts.append(data)
        if self.streaming and not self.ready.done():
            self.ready.set_result(None)

    def on_whole(self, status, headers, bytes body):
        self._on_whole(status, headers, body)

    cdef _on_whole(self, status, headers, bytes body):
        if self.want_stream and status == 200:
            self.on_head(status, headers)
            if body:
                self.on_data(body)
            self._on_end(None)
            return
        self.ended = True
        if not self.ready.done():
            self.ready.set_result(UpstreamReply(status, headers, body, None, None))

    def on_end(self, error):
        self._on_end(error)

    cdef _on_end(self, error):
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

    def reply(self):
        if self.streaming:
            return UpstreamReply.streaming(self.parts.pop(0), self, self.headers)
        return UpstreamReply(self.status, self.headers, b"".join(self.parts), None, None)

    # ---------------------------------------------------------- stream side

    def start(self, on_chunk, on_end):
        pending, self.parts = self.parts, []
        for data in pending:
            if self.closed:
                return
            on_chunk(data)
        if self.ended:
            on_end(self.end_error)
            return
        self.on_end_cb = on_end
        self.conn.deliver_to(on_chunk)

    def pause(self):
        self.conn.pause()

    def resume(self):
        self.conn.resume()

    def close(self):
        self.closed = True
        if not self.ended:
            self.ended = True
            self.conn.abort()


