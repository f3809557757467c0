"""Keep-alive connections to one upstream origin.

Owns: opening connections (connect timeout, TLS), keeping complete ones for
reuse (up to ``max_idle``, for ``idle_timeout_s``), dropping the rest, and the
request target for a URL under the pool's base URL. Must not touch: exchanges
on a connection (``h1``), which replica a pool belongs to (``session``).
"""
from __future__ import annotations

import asyncio
import ssl as ssl_module
from urllib.parse import urlsplit

from ..errors import UpstreamFailure, UpstreamTimeout
from .h1 import H1Connection


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
        # taken on first use: pools live in one worker's loop, and on Python 3.11 every
        # get_running_loop() is a getpid() syscall
        self._loop: asyncio.AbstractEventLoop | None = None

    def path_of(self, url: str) -> str:
        """The request target for ``url``, which starts with this pool's base URL."""
        if url.startswith(self.base_url):
            return self.base_path + url[len(self.base_url):]
        parts = urlsplit(url)
        return parts.path + ("?" + parts.query if parts.query else "")

    def kept_alive(self) -> H1Connection | None:
        """A kept-alive connection ready for an exchange, or None: then ``connect``. (Not a coroutine:
        nearly every exchange finds one, and a coroutine costs every exchange.)"""
        if not self._idle:
            return None
        now = self._loop.time()     # set: a connection is idle only after ``connect`` made it
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable and now - conn.idle_since < self.idle_timeout_s:
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    async def connect(self, connect_s: float) -> H1Connection:
        """A new connection, within ``connect_s``."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: H1Connection(self, loop), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self.tls else None)
        except TimeoutError:
            raise UpstreamTimeout(f"could not connect to the upstream within {connect_s:g}s") from None
        except OSError as e:
            raise UpstreamFailure(f"cannot connect to upstream: {e.strerror or type(e).__name__}") from None
        conn.reused = False
        return conn

    def release(self, conn: H1Connection, reusable: bool) -> None:
        """``conn``'s exchange is complete; keep it for the next one if it may be reused."""
        if reusable and not self._closed and conn.transport is not None and len(self._idle) < self.max_idle:
            conn.released(conn._loop.time())
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
