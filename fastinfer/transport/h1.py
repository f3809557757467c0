"""A lean HTTP/1.1 client for upstream calls: keep-alive pools and callback-driven bodies.

Why not aiohttp's client: a streamed token costs aiohttp a StreamReader feed,
a future, a task wake-up and a timer reschedule per chunk. Here the body is
decoded inside ``data_received`` and handed to a sink synchronously, so a
relayed stream chunk goes socket -> sink -> client socket with no task switch.
Timeouts use one lazy watchdog timer per exchange: it is armed once and only
re-armed when it fires early, so a chunk costs a ``loop.time()`` read, not a
timer reschedule.

Owns: connections, pooling, request framing, response parsing (content-length,
chunked, until-close), connect / first-byte / idle / total timeouts.
Must not touch: what the body means; providers and the engine decide that.
"""
from __future__ import annotations

import asyncio
import ssl as ssl_module
from typing import Protocol
from urllib.parse import urlsplit

from ..errors import GatewayError, UpstreamFailure, UpstreamTimeout

_MAX_HEAD = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_MODE_LENGTH, _MODE_CHUNKED, _MODE_CLOSE = 0, 1, 2


class Sink(Protocol):
    """Receives one response. Calls arrive in order: head, data*, end (exactly once)."""

    def on_head(self, status: int, headers: dict[str, str]) -> None: ...
    def on_data(self, data: bytes) -> None: ...
    def on_end(self, error: GatewayError | None) -> None: ...


class Timeouts(Protocol):
    connect_s: float
    first_byte_s: float
    idle_s: float
    total_s: float


class H1Connection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "sink", "reused", "_loop", "_buf", "_in_head", "_mode", "_remaining",
                 "_chunk_state", "_keep_alive", "_got_bytes", "_last_io", "_deadline", "_timeouts", "_timer",
                 "_idle_since")

    def __init__(self, pool: "Pool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: Sink | None = None
        self.reused = False
        self._loop = asyncio.get_running_loop()
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.pool.forget(self)
        if self.sink is not None:
            if not self._in_head and self._mode == _MODE_CLOSE:
                self._finish(reusable=False)
            else:
                self._fail(UpstreamFailure("upstream closed the connection"
                                           + (" mid-stream" if self._got_bytes else "")))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost reports the outcome

    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            return  # bytes on an idle connection: it will be dropped on next use
        self._last_io = self._loop.time()
        self._got_bytes = True
        if self._in_head:
            self._read_head(data)
        elif self._mode == _MODE_CHUNKED:
            self._read_chunked(data)
        elif self._mode == _MODE_LENGTH:
            self._read_length(data)
        else:
            self.sink.on_data(data)

    # ------------------------------------------------------------ exchange

    def send(self, request: bytes, sink: Sink, timeouts: Timeouts) -> None:
        loop = self._loop
        now = loop.time()
        self.sink = sink
        self._buf = b""
        self._in_head = True
        self._mode = _MODE_CLOSE
        self._remaining = 0
        self._chunk_state = 0
        self._keep_alive = True
        self._got_bytes = False
        self._last_io = now
        self._timeouts = timeouts
        self._deadline = now + timeouts.total_s
        # armed for the shortest limit: it re-arms itself for whichever phase the exchange is in
        self._timer = loop.call_at(now + min(timeouts.first_byte_s, timeouts.idle_s, timeouts.total_s),
                                   self._watchdog)
        self.transport.write(request)

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the exchange now: the upstream sees the connection close."""
        self.sink = None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def _watchdog(self) -> None:
        self._timer = None
        if self.sink is None:
            return
        now = self._loop.time()
        t = self._timeouts
        if now >= self._deadline:
            return self._timed_out(f"upstream exceeded the total timeout of {t.total_s:g}s")
        if self._got_bytes and not self._in_head:
            limit, what = t.idle_s, f"upstream stream idle for more than {t.idle_s:g}s"
        else:
            limit, what = t.first_byte_s, f"upstream did not answer within {t.first_byte_s:g}s"
        due = self._last_io + limit
        if now >= due:
            return self._timed_out(what)
        self._timer = self._loop.call_at(min(due, self._deadline), self._watchdog)

    def _timed_out(self, message: str) -> None:
        sink = self.sink
        self.abort()
        sink.on_end(UpstreamTimeout(message))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self, reusable: bool) -> None:
        sink, self.sink = self.sink, None
        self._cancel_timer()
        self.pool.release(self, reusable and self._keep_alive)
        sink.on_end(None)

    def _fail(self, error: GatewayError) -> None:
        sink, self.sink = self.sink, None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        sink.on_end(error)

    # ------------------------------------------------------------- parsing

    def _read_head(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = buf.find(_HEAD_END)
        if end < 0:
            if len(buf) > _MAX_HEAD:
                return self._fail(UpstreamFailure("upstream sent an oversized response head"))
            self._buf = buf
            return
        self._buf = b""
        try:
            status, headers = _parse_head(buf[:end])
        except ValueError:
            return self._fail(UpstreamFailure("upstream sent a malformed HTTP response"))
        rest = buf[end + 4:]
        if 100 <= status < 200:  # interim answer: the real head follows
            return self._read_head(rest) if rest else None
        self._in_head = False
        if headers.get("connection", "").lower() == "close":
            self._keep_alive = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode = _MODE_CHUNKED
        elif "content-length" in headers:
            self._mode = _MODE_LENGTH
            self._remaining = int(headers["content-length"])
        elif status in (204, 304):
            self._mode, self._remaining = _MODE_LENGTH, 0
        else:
            self._mode = _MODE_CLOSE
            self._keep_alive = False
        self.sink.on_head(status, headers)
        if self.sink is None:
            return  # the sink aborted on the head
        if self._mode == _MODE_LENGTH and self._remaining == 0:
            return self._finish(reusable=not rest)
        if rest:
            self.data_received(rest)

    def _read_length(self, data: bytes) -> None:
        n = len(data)
        if n >= self._remaining:
            if n > self._remaining:
                self._keep_alive = False  # the upstream sent more than it announced
                data = data[:self._remaining]
            self._remaining = 0
            self.sink.on_data(data)
            if self.sink is not None:
                self._finish(reusable=True)
        else:
            self._remaining -= n
            self.sink.on_data(data)

    def _read_chunked(self, data: bytes) -> None:
        """Chunked transfer decoding; hands the sink one joined piece per read."""
        if not self._buf and self._chunk_state == 0:
            # fast path: a read holding exactly one whole chunk (a streamed token, typically)
            eol = data.find(b"\r\n", 0, 20)
            if eol > 0:
                try:
                    size = int(data[:eol], 16)
                except ValueError:
                    size = 0
                end = eol + 2 + size
                if size and len(data) == end + 2 and data.endswith(b"\r\n"):
                    self.sink.on_data(data[eol + 2:end])
                    return
        buf = self._buf + data if self._buf else data
        pos, n = 0, len(buf)
        out = []
        while pos < n:
            if self._chunk_state == 0:              # chunk-size line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    size = int(buf[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    return self._fail(UpstreamFailure("upstream sent malformed chunked encoding"))
                pos = eol + 2
                if size == 0:
                    self._chunk_state = 3
                else:
                    self._remaining = size
                    self._chunk_state = 1
            elif self._chunk_state == 1:            # chunk data
                take = min(self._remaining, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = 2
            elif self._chunk_state == 2:            # CRLF after data
                if n - pos < 2:
                    break
                pos += 2
                self._chunk_state = 0
            else:                                   # trailers, up to an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                if eol == pos:
                    pos += 2
                    self._buf = b""
                    if out:
                        self.sink.on_data(out[0] if len(out) == 1 else b"".join(out))
                    if self.sink is not None:
                        self._finish(reusable=pos == n)
                    return
                pos = eol + 2
        self._buf = buf[pos:] if pos < n else b""
        if out:
            self.sink.on_data(out[0] if len(out) == 1 else b"".join(out))


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(lines[0])
    status = int(rest[:3])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(line)
        headers[name.strip().lower()] = value.strip()
    return status, headers


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(self, base_url: str, max_idle: int = 256, idle_timeout_s: float = 30.0):
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.base_path = parts.path.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self._ssl = ssl_module.create_default_context() if self.tls else None
        self._idle: list[H1Connection] = []
        self._closed = False

    def path_of(self, url: str) -> str:
        """The request target for ``url``, which starts with this pool's base URL."""
        if url.startswith(self.base_url):
            return self.base_path + url[len(self.base_url):]
        parts = urlsplit(url)
        return parts.path + ("?" + parts.query if parts.query else "")

    async def acquire(self, connect_s: float) -> H1Connection:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None and not conn.transport.is_closing() \
                    and now - conn._idle_since < self.idle_timeout_s:
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: H1Connection(self), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self.tls else None)
        except TimeoutError:
            raise UpstreamTimeout(f"could not connect to the upstream within {connect_s:g}s") from None
        except OSError as e:
            raise UpstreamFailure(f"cannot connect to upstream: {e.strerror or type(e).__name__}") from None
        conn.reused = False
        return conn

    def release(self, conn: H1Connection, reusable: bool) -> None:
        if reusable and not self._closed and conn.transport is not None and len(self._idle) < self.max_idle:
            conn._idle_since = conn._loop.time()
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def forget(self, conn: H1Connection) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()


def build_request(method: str, target: str, host: str, headers: dict, body: bytes) -> bytes:
    # identity: bodies are relayed as they come, so they must not arrive compressed
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
