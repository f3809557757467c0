"""Keep-alive connections to one upstream origin.

Owns: opening connections (connect timeout, TLS), keeping complete ones for
reuse (up to ``max_idle``, for ``idle_timeout_s``: the compiled ``KeptAlive``), dropping the rest,
and the request target for a URL under the pool's base URL. Must not touch: exchanges
on a connection (``h1``), which replica a pool belongs to (``session``).
"""
from __future__ import annotations

import asyncio
import ssl as ssl_module
from urllib.parse import urlsplit

from ..errors import UpstreamFailure, UpstreamTimeout
from .._core import upstream


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    # the connection and kept-alive list ``connect`` and a pool make: the compiled core (the tests
    # swap in its reference, ``_core.ref.upstream``)
    core = upstream

    def __init__(self, base_url: str, max_idle: int = 256, idle_timeout_s: float = 30.0):
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.base_path = parts.path.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_module.create_default_context() if self.tls else None
        kept = self._kept = self.core.KeptAlive(max_idle, idle_timeout_s)
        # every exchange takes a connection and gives it back: the calls go straight to the compiled
        # list, where a method of this class in between would cost each a Python frame.
        # ``kept_alive()``: a kept-alive connection ready for an exchange, or None (then ``connect``);
        # ``release(conn, reusable)``: an exchange is complete; ``forget(conn)``: its socket went
        self.kept_alive, self.release, self.forget = kept.take, kept.keep, kept.forget
        # taken on first use: pools live in one worker's loop, and on Python 3.11 every
        # get_running_loop() is a getpid() syscall
        self._loop: asyncio.AbstractEventLoop | None = None

    def path_of(self, url: str) -> str:
        """The request target for ``url``, which starts with this pool's base URL."""
        if url.startswith(self.base_url):
            return self.base_path + url[len(self.base_url):]
        parts = urlsplit(url)
        return parts.path + ("?" + parts.query if parts.query else "")

    async def connect(self, connect_s: float):
        """A new connection, within ``connect_s``."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        make = self.core.H1Connection
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: make(self, loop), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self.tls else None)
        except TimeoutError:
            raise UpstreamTimeout(f"could not connect to the upstream within {connect_s:g}s") from None
        except OSError as e:
            raise UpstreamFailure(f"cannot connect to upstream: {e.strerror or type(e).__name__}") from None
        conn.reused = False
        return conn

    def close(self) -> None:
        self._kept.close()
