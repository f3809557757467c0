"""``python -m bench.relay_floor PORT UPSTREAM_PORT WORKERS``: the uvloop floor, the bench's
``uvloop-floor`` path.

What it is: the least a Python gateway on uvloop could do. ``WORKERS`` processes share ``PORT``
(``SO_REUSEPORT``); each client connection gets its own keep-alive connection to the mock, opened
when the client connects, and the bytes go through untouched both ways — no parsing, no header,
no check, no log. The mock's answer is already a valid answer to the client, framing included,
so the client cannot tell it from the mock. What a path costs above this is its own work; what
this costs is the event loop's callbacks and the kernel's.

Owns: only this relay. Must not touch: fastinfer (it imports none of it), the figures (``run.py``).
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import uvloop


class _ToClient(asyncio.Protocol):
    """The upstream side of one client's pair: what the mock sends goes to the client."""

    def __init__(self, client: asyncio.Transport):
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc) -> None:
        self.client.close()


class _ToUpstream(asyncio.Protocol):
    """The client side: what the client sends goes to the mock (held until its connection is up)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None
        self.held: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: _ToClient(self.transport), "127.0.0.1",
                                                       self.upstream_port)
        except OSError:
            self.transport.close()
            return
        upstream.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = upstream
        for data in self.held:
            upstream.write(data)
        self.held.clear()
        if self.transport.is_closing():
            upstream.close()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.held.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc) -> None:
        if self.upstream is not None:
            self.upstream.close()


def _serve(sock: socket.socket, upstream_port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await loop.create_server(lambda: _ToUpstream(upstream_port), sock=sock)
        async with server:
            await stop.wait()
    uvloop.run(main())


def main(argv: list[str]) -> int:
    port, upstream_port, workers = (int(a) for a in argv)
    children = []
    for _ in range(workers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(4096)
        pid = os.fork()
        if pid == 0:
            try:
                _serve(sock, upstream_port)
            finally:
                os._exit(0)
        sock.close()
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(pid, signal.SIGTERM) for pid in children])
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
