# cython: language_level=3, annotation_typing=False
"""The data routes' own connection: an asyncio protocol that parses with httptools and calls
the route's handler, handing any other connection to aiohttp. Plain Python, and compiled as it is
with the types of ``client.pxd`` (Cython's pure-Python mode), as ``upstream.py`` is: the gateway
runs the compiled module; the tests run the connection's suite over it and over this source run as
Python (``fastinfer._core.ref.client``). Compiled, the connection frames a request, fills its body
and its ``DirectRequest`` and wakes its task in C calls and C fields, where each was a Python call
(~470 interpreted instructions a request before).

aiohttp's ``RequestHandler`` costs a data request about 45 µs of CPU before the gateway's code
runs: its parser builds a ``RawRequestMessage`` with a ``URL``, a payload ``StreamReader``, a
``BaseRequest`` and a ``StreamWriter``, and its per-connection coroutine arms and cancels timers
around each message. ``DirectConnection`` does what a data request needs and no more: it frames
each request itself (the head ends at the first empty line, the body is ``Content-Length`` bytes),
reads the head in one compiled pass when it has the plain shape (``_core.heads``: a strict subset of
what llhttp accepts, read as llhttp reads it) and with httptools otherwise (the same llhttp rules
aiohttp's C parser applies), and runs the route's handler (already wrapped in the gateway's error
middleware) with a ``DirectRequest``: the headers, the body, and as its writer the connection
itself, which sends straight to the transport. The handlers run in one task a connection, one
request after another (a request that comes while the task waits wakes it): a task made per
request cost ~0.5 µs more than waking one, the task registry's ``WeakSet`` in Python among it
(``bench/micro/test_bench_connection_task.py``).

Only the plain case takes this path: an HTTP/1.1 ``POST`` to one of the app's ``DIRECT_ROUTES``
exactly, its body framed by ``Content-Length`` (or empty), no ``Transfer-Encoding``,
``Content-Encoding``, ``Expect`` or ``Upgrade``. At the first request that is anything else (another
route, a query string, HTTP/1.0, a chunked or compressed body, a head httptools refuses or one
longer than aiohttp accepts) the connection becomes aiohttp's, from that request's first byte on:
a new ``RequestHandler`` is given the transport and every byte not yet answered, and the
connection stays its own until it closes. So every answer aiohttp gives (404, 405, its 400s for
malformed bytes, 100-continue, the admin routes) is unchanged, and only the hot path is new.

What the connection keeps of aiohttp's manners: it registers with the aiohttp ``Server`` (the
drain counts and closes it, the worker probe counts it and its requests); a request's task is
cancelled when the client goes (``handler_cancellation``: the connection's task, which then ends);
answers are sent one request at a time, pipelined requests waiting in the buffer; an idle
connection closes after the keep-alive timeout (from its start too, like aiohttp); while the worker
drains every answer says ``Connection: close``; an answer given before its body arrived (413, 408) is followed by a
lingering close, so the client reads the answer before the connection resets.

And ``ClientStream``: a relayed stream's chunk-framed writes to its client, through this connection
(or aiohttp's writer, on its path), the gateway's head with the first of them.

Owns: ``DirectConnection``, ``DirectRequest``, ``RequestBody``. Must not touch: what handlers do
(``gateway.app``), how an answer is written (``gateway.answer``: the server passes its
``written_response`` in, since a ``_core`` module imports no gateway module).
"""
from __future__ import annotations

import asyncio
import logging
import socket

import httptools
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

from ..observe import log_bug
from .heads import Fields, chunk_size_line, framed_chunk, plain_post

log = logging.getLogger("fastinfer.gateway")

MAX_HEAD_BYTES = 8190      # aiohttp's max_line_size and max_field_size: a longer head takes its path
LINGER_S = 2.0             # how long an answer given before its body arrived waits for that body
# a head with one of these is aiohttp's to answer (its framing, decoding or 100-continue)
_NOT_DIRECT = ("Transfer-Encoding", "Content-Encoding", "Expect", "Upgrade")
_END_OF_HEAD = b"\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"          # a chunked body's end
CRLF = b"\r\n"                     # a chunk's data ends with it
CRLF_LAST_CHUNK = CRLF + LAST_CHUNK
STREAM_HIGH_WATER = 256 * 1024     # a stream's bytes waiting for its client past which the upstream pauses
JOIN_MAX = 16 * 1024               # an answer up to this size is joined into one write (``_writelines``)


class _Head:
    """httptools' callbacks for one head: the target and the fields, kept as they arrive."""

    __slots__ = ("url", "fields")

    def __init__(self):
        self.url = b""
        self.fields: list[tuple[str, str]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))


class RequestBody:
    """A request's body as it arrives: ``complete`` when ``length`` bytes are in (what aiohttp's
    ``StreamReader`` answers to ``read_json``: ``is_eof``, ``total_bytes``, ``read_nowait``)."""

    def __init__(self, length: int, limit: int, loop):
        self._start(length, limit, loop)

    def _start(self, length: int, limit: int, loop) -> None:
        """``__init__``'s work, which the connection calls on a bare instance (``_frame``)."""
        self.length = length
        self.chunks: list[bytes] = []
        self.total_bytes = 0
        self.complete = length == 0     # an attribute, not only ``is_eof()``: read on every request
        self._keep = length <= limit   # a body over the limit is answered 413 unread: dropped as it comes
        self._waiter: asyncio.Future | None = None
        self._loop = loop

    def is_eof(self) -> bool:
        return self.complete

    def feed(self, data: bytes) -> bytes:
        """Keeps what belongs to the body; returns the bytes past its end (the next request's)."""
        missing = self.length - self.total_bytes
        if len(data) > missing:
            data, rest = data[:missing], data[missing:]
        else:
            rest = b""
        if data:
            if self._keep:
                self.chunks.append(data)
            self.total_bytes += len(data)
            if self.total_bytes >= self.length:
                self.complete = True
                if self._waiter is not None and not self._waiter.done():
                    self._waiter.set_result(None)
        return rest

    def read_nowait(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    async def read(self) -> bytes:
        if not self.complete:
            self._waiter = self._loop.create_future()
            await self._waiter
        return self.read_nowait()

    async def read_within(self, timeout_s: float) -> bytes:
        """``read``, or ``TimeoutError`` when the rest has not come within ``timeout_s``: one timer,
        where ``asyncio.timeout`` would find the task and reschedule (two ``getpid`` syscalls on 3.11).
        A client that sends the head and the body apart (httpx, so the OpenAI and Anthropic SDKs)
        often comes this way."""
        if not self.complete:
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout_s, _time_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        return self.read_nowait()


def _time_out(waiter) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class DirectRequest(dict):
    """What a data route's handler reads of its request (the part of ``web.Request`` it uses). The
    request is itself the mapping aiohttp's request is (what the middleware and the handler keep on
    it): a dict, so ``request[REQUEST_ID]`` is a lookup and not a method call."""

    version = HttpVersion11

    # a request equals only itself and hashes by identity, as aiohttp's does, whatever it holds
    def __hash__(self) -> int:
        return object.__hash__(self)

    def __eq__(self, other) -> bool:
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other

    def __init__(self, path: str, headers: "Fields | CIMultiDictProxy", keep_alive: bool, body: RequestBody,
                 connection: DirectConnection):
        self._fill(path, headers, keep_alive, body, connection)

    def _fill(self, path: str, headers, keep_alive: bool, body: RequestBody, connection: DirectConnection) -> None:
        """``__init__``'s work, which the connection calls on a bare instance (``_frame``)."""
        self.method = "POST"
        self.path = path
        self.headers = headers
        self.keep_alive = True if keep_alive else False
        self.content_length = body.length
        self.content = body
        self.writer = connection        # it writes the answers, one request at a time
        self.transport = connection.transport
        self.protocol = connection
        self.task: asyncio.Task | None = None

    async def read(self) -> bytes:
        return await self.content.read()


class DirectConnection:
    """One client connection on the public listener (see the module's docstring): an asyncio
    protocol (as such: a compiled class cannot inherit ``asyncio.Protocol``). It is also its current
    request's writer (``request.writer``: ``_writelines``, ``drain``, ``output_size``).

    ``server`` is aiohttp's ``web.Server`` the connection registers with; ``routes`` maps a raw
    path to its handler; ``handoff()`` makes the aiohttp ``RequestHandler`` the connection becomes;
    ``written_response(response, keep_alive)`` is the bytes of an answer ``answer`` did not write;
    ``draining()`` is True while the worker drains."""

    chunked = False

    def __init__(self, server, routes: dict, handoff, written_response, *, loop: asyncio.AbstractEventLoop,
                 max_body_bytes: int, keepalive_timeout: float, draining) -> None:
        self._server = server
        self._routes = routes           # raw path -> handler (the app's POST DIRECT_ROUTES)
        self._written_response = written_response
        self._max_body_bytes = max_body_bytes
        self._handoff = handoff         # () -> a new aiohttp RequestHandler for this server
        self._keepalive_timeout = keepalive_timeout
        self._draining = draining       # () -> True while the worker drains
        self._loop = loop      # the server's: on Python 3.11 get_running_loop() is a getpid() syscall
        self.transport: asyncio.Transport | None = None
        self._buffer = b""              # bytes received and not yet framed: the next request's
        self._request: DirectRequest | None = None
        self._body: RequestBody | None = None  # the current request's, while it arrives
        self._close_after = False       # ``close()``: no request after the current one
        self._write_paused = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._task_handler = None       # aiohttp's Server reads it when the connection is lost
        self._task: asyncio.Task | None = None   # runs the handlers (``_serve``), while the connection is ours
        self._pending: tuple | None = None       # (request, route) framed, for the task to take
        self._waiter: asyncio.Future | None = None   # what the task waits on between requests
        self.output_size = 0            # bytes of the current request's answer written
        # the gateway key this connection's client presented and the ring accepted
        # (``_core.keys.KeyMemo``): its next request with the same key skips the hash. Dropped
        # with the connection, and when aiohttp takes it over.
        self.key_memo = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connection_made(self, transport)
        self._went_idle()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            if self._body is None or self._body.feed(data) or self._body.complete:
                self._close()
            return
        body = self._body
        if body is not None:
            data = body.feed(data)
            if body.complete:
                self._body = None
            if not data:
                return
        self._buffer += data
        if self._request is None:
            self._next_request()
        elif len(self._buffer) > MAX_HEAD_BYTES * 4 and not self._reading_paused:
            self._reading_paused = True      # pipelined requests wait until this one is answered
            self.transport.pause_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._server.connection_lost(self, exc)
        self.transport = None
        self.key_memo = None
        self._cancel_idle_timer()
        request, self._request, self._body = self._request, None, None
        if request is not None and request.task is not None and not request.task.done():
            request.task.cancel()       # the client left: its handler answers 499 (handler_cancellation)
        # what a request in flight still holds (its transport, whose protocol is this connection,
        # the upstream exchange) then goes when its task ends, not at the next full collection
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("Connection lost"))
        self._wake_task()       # between requests: it ends

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ the current request's writer

    def _writelines(self, chunks) -> None:
        """What ``answer`` writes through: the transport's own send, counting what went out. ``chunks``
        (a tuple of bytes: a head and a body) go out joined in one ``write`` up to ``JOIN_MAX`` bytes:
        copying an answer's few hundred bytes costs less than the transport's ``writelines`` (~1,500
        instructions in uvloop, the join ~500 as valgrind counts it), and both end in one send."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        size = 0
        for chunk in chunks:
            size += len(chunk)
        self.output_size += size
        if size <= JOIN_MAX:
            transport.write(b"".join(chunks))
        else:
            transport.writelines(chunks)

    async def drain(self) -> None:
        """Returns when the client has read enough for more to be written."""
        if self.transport is None:
            raise ConnectionResetError("Connection lost")
        if self._write_paused:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    # ------------------------------------------------------------ what aiohttp's Server calls

    def close(self) -> None:
        """No request after the one being answered (the drain's cut, aiohttp's ``pre_shutdown``)."""
        self._close_after = True
        if self._request is None:
            self._close()

    def force_close(self) -> None:
        self._close()

    async def shutdown(self, timeout: float | None = None) -> None:
        self._close()

    # ------------------------------------------------------------ requests

    def _next_request(self) -> None:
        """Frames the request at the buffer's start: serves it, waits for the rest of its head,
        or hands the connection to aiohttp."""
        try:
            self._frame()
        except Exception as e:     # a bug here must cost this connection, not the worker
            log_bug(log, "framing a request on a direct connection failed", e)
            self._close()

    def _frame(self) -> None:
        buffer = self._buffer
        end = buffer.find(_END_OF_HEAD)
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._hand_off()
            return
        head_length = end + 4
        if head_length > MAX_HEAD_BYTES:
            self._hand_off()
            return
        plain = plain_post(buffer, head_length)
        if plain is None:
            plain = DirectConnection.read_head(buffer[:head_length])     # not the plain shape: llhttp decides
            if plain is None:
                self._hand_off()
                return
        path, fields, length, keep_alive = plain
        route = self._routes.get(path)
        if route is None:
            self._hand_off()
            return
        # each made bare and filled by a C call: a compiled class's call from C makes a tuple of the
        # arguments, which its ``__init__`` then parses (``RequestBody.__new__`` compiled is its tp_new alone)
        body = RequestBody.__new__(RequestBody)
        body._start(length, self._max_body_bytes, self._loop)
        rest = body.feed(buffer[head_length:])
        self._buffer = rest
        self._body = None if body.complete else body
        keep_alive = keep_alive and not self._close_after and not self._draining()
        # the plain shape's fields as they lie; llhttp's reading as aiohttp's requests have them
        headers = fields if type(fields) is Fields else CIMultiDictProxy(CIMultiDict(fields))
        self.output_size = 0
        request = self._request = DirectRequest.__new__(DirectRequest)
        request._fill(path, headers, keep_alive, body, self)
        self._server.requests_count += 1
        self._pending = (request, route)
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self._wake_task()
        request.task = self._task

    @staticmethod
    def read_head(head: bytes) -> tuple[str, list, int, bool] | None:
        """``plain_post``'s reading of a head outside its strict subset, by llhttp (a field with
        UTF-8 in it, a ``Content-Length`` with spaces around): None when the request is not a plain
        HTTP/1.1 ``POST`` or llhttp refuses its bytes (aiohttp then answers them in the gateway's shape)."""
        fields = _Head()
        parser = httptools.HttpRequestParser(fields)
        try:
            # llhttp is strict: a bare LF anywhere is refused, so the first empty line found is
            # the head's end for it too
            parser.feed_data(head)
        except httptools.HttpParserError:
            return None
        if parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
            return None
        headers = CIMultiDict(fields.fields)
        if any(name in headers for name in _NOT_DIRECT):
            return None
        length = headers.get("Content-Length")
        # not parser.should_keep_alive(): once a request without a body is complete, llhttp has
        # forgotten its Connection field and says keep-alive
        keep_alive = not any(token.strip().lower() == "close"
                             for value in headers.getall("Connection", ()) for token in value.split(","))
        return fields.url.decode("latin-1"), fields.fields, int(length) if length is not None else 0, keep_alive

    async def _serve(self) -> None:
        """The connection's task: each request's handler, then its answer out, until the connection
        closes, is handed to aiohttp, or a request's handler is cancelled (the client left) or fails."""
        try:
            while True:
                if self._pending is None:
                    if self.transport is None:
                        return
                    self._waiter = self._loop.create_future()
                    try:
                        await self._waiter          # ``_frame``, or the connection's end
                    except asyncio.CancelledError:
                        return
                    finally:
                        self._waiter = None
                    if self._pending is None:
                        return
                request, route = self._pending
                self._pending = None
                try:
                    response = await route(request)
                    # an answer given before its body arrived (413, 408) ends the connection: it says so
                    keep_alive = request.keep_alive and response.keep_alive is not False and request.content.complete
                    if not response.prepared:      # an error's, or one ``answer`` left to aiohttp to write
                        self._writelines(self._written_response(response, keep_alive))
                    if self._write_paused or self.transport is None:   # else nothing to wait for
                        await self.drain()
                except (ConnectionError, asyncio.CancelledError):
                    self._close()
                    return
                except Exception as e:
                    log_bug(log, f"{request.path}: answering on a direct connection failed", e)
                    self._close()
                    return
                # nothing of this request stays alive while the connection waits for its next one
                request = route = response = None
                self._answered(keep_alive)
        finally:
            self._task = None

    def _wake_task(self) -> None:
        """The task waits between requests: a request is framed (``_pending``), or it is to end."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _answered(self, keep_alive: bool) -> None:
        """The current request's answer is out: on to the next one, or the connection closes."""
        if self.transport is None:
            return
        body_missing = self._body is not None
        self._request = None
        if body_missing:
            # answered before its body arrived (413, 408): read and drop the rest a while, so the
            # client reads the answer before the close, which unread bytes would turn into a reset
            self._lingering = True
            self._loop.call_later(LINGER_S, self._close)
            return
        if not keep_alive or self._close_after:
            self._close()
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._buffer:
            self._next_request()
        else:
            self._went_idle()

    def _hand_off(self) -> None:
        """From the request at the buffer's start on, the connection is aiohttp's."""
        transport, buffer = self.transport, self._buffer
        self._cancel_idle_timer()
        self._server.connection_lost(self)      # the handler registers itself
        self.transport = None
        self.key_memo = None
        self._wake_task()       # between requests: it ends
        handler = self._handoff()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._write_paused:
            handler.pause_writing()
        if self._reading_paused:
            transport.resume_reading()
        if buffer:
            handler.data_received(buffer)

    # ------------------------------------------------------------ idle connections

    def _went_idle(self) -> None:
        if self._keepalive_timeout <= 0:
            return
        self._idle_since = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_at(self._idle_since + self._keepalive_timeout, self._idle_check)

    def _idle_check(self) -> None:
        # one timer per idle period, re-armed rather than cancelled and made again per request
        self._idle_timer = None
        if self.transport is None or self._request is not None:
            return
        close_at = self._idle_since + self._keepalive_timeout
        if self._loop.time() >= close_at:
            self._close()
        else:
            self._idle_timer = self._loop.call_at(close_at, self._idle_check)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()



class ClientStream:
    """The client side of a relayed stream: synchronous, chunk-framed writes straight to the socket.

    aiohttp's ``response.write`` is a coroutine per chunk; a relayed chunk is written from the
    upstream's ``data_received`` instead, framed here. The head goes out with the first write: the
    gateway's (``gateway.answer.stream_head``) through the writer's own send, so it counts the answer
    as started; or, when aiohttp wrote the head (``head`` None), the one its prepared response left
    waiting in the writer. ``writer`` is a ``DirectConnection`` or aiohttp's ``StreamWriter``.
    (Compiled, a stream's writes and its end are C calls: in Python they were ~100 opcodes a stream.)
    """

    def __init__(self, writer, transport, head) -> None:
        self.writer = writer
        self.transport = transport
        self.head = head
        self.chunked = head is not None or writer.chunked
        # aiohttp's head still waits in the writer (an aiohttp that sends it in prepare leaves nothing)
        self.aiohttp_head = head is None and bool(getattr(writer, "_headers_buf", None))
        # the transport's methods, bound once: each chunk calls three, and a call by name looks the
        # method up in the transport's type each time (~500 instructions a chunk)
        if transport is not None:
            self._send, self._is_closing, self._buffered = (transport.write, transport.is_closing,
                                                             transport.get_write_buffer_size)

    def write(self, data: bytes) -> bool:
        """``data`` queued for the client; False when its buffer is past ``STREAM_HIGH_WATER``."""
        if self.transport is None or self._is_closing():
            return True  # the client is gone; aiohttp cancels the handler, which stops the pump
        if self.head is not None:
            head = self.head
            self.head = None
            # the data is copied once, by the writer's join, not also by a framing first
            self.writer._writelines((head, chunk_size_line(len(data)), data, CRLF))
        elif self.aiohttp_head:
            self.aiohttp_head = False
            self.writer._send_headers_with_payload(data, False)
        else:
            self._send(framed_chunk(data, b"") if self.chunked else data)
        return self._buffered() <= STREAM_HIGH_WATER

    def end(self, ending: bytes) -> None:
        """Our head's stream is over: ``ending`` (may be empty) and the last chunk in one send (with
        the head, for a stream that sent nothing)."""
        if self.transport is None or self._is_closing():
            return
        if self.head is not None:
            # a stream read whole (a short one, or an upstream that sent it at once): its ~12 KB for 64
            # events are copied once, by the writer's join, not also by a framing first
            head = self.head
            self.head = None
            self.writer._writelines((head, chunk_size_line(len(ending)), ending, CRLF_LAST_CHUNK) if ending
                                    else (head, LAST_CHUNK))
        else:
            self._send(framed_chunk(ending, LAST_CHUNK) if ending else LAST_CHUNK)

    async def drain(self) -> None:
        await self.writer.drain()

# what the gateway reads of a request, at the speed of a __slots__ field (``slots.h``), compiled only (``cython.compiled`` would
# import Cython at run time; run as Python, ``__file__`` is this .py)
if not __file__.endswith(".py"):
    from cython.cimports.fastinfer._core.slots import fi_readonly_slots
    fi_readonly_slots(DirectRequest, ("method", "path", "headers", "keep_alive", "content_length", "content",
                                      "writer", "transport", "protocol", "task"))
