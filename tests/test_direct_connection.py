"""``gateway.connection.DirectConnection``, in process over real sockets on 127.0.0.1.

A plain data request is served by the connection itself (its handler sees a ``DirectRequest``);
anything else, from that request's first byte on, by aiohttp (a ``web.Request``), and the
connection stays aiohttp's. The connection registers with aiohttp's server as aiohttp's own do,
waits for a body that comes in pieces, answers one request at a time, lets a client that went
away cancel its handler, reads a body it answered early before it closes, and closes when idle.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from fastinfer.gateway.connection import MAX_HEAD_BYTES, DirectConnection, DirectRequest
from fastinfer.gateway.protocol import DIRECT_BODY_LIMIT, DIRECT_ROUTES, EdgeAppRunner

PATH = "/v1/chat/completions"


class Recorder:
    """A data route's handler that answers its body back and records who called it with what."""

    def __init__(self, wait: asyncio.Event | None = None):
        self.seen: list[tuple[str, bytes]] = []
        self.cancelled = 0
        self.wait = wait

    async def __call__(self, request) -> web.Response:
        kind = "direct" if isinstance(request, DirectRequest) else "aiohttp"
        if request.content_length is not None and request.content_length > 64:
            self.seen.append((kind, b"<too large>"))
            return web.Response(status=413, body=b'{"error":"too large"}', content_type="application/json")
        body = await request.read()
        self.seen.append((kind, body))
        if self.wait is not None:
            try:
                await self.wait.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return web.Response(body=b'{"echo":%s}' % body, content_type="application/json",
                            headers={"x-kind": kind})


async def _healthz(request) -> web.Response:
    return web.Response(text="ok")


async def _serve(handler, *, keepalive_timeout: float = 75.0):
    app = web.Application()
    app.router.add_post(PATH, handler.__call__)
    app.router.add_get("/healthz", _healthz)
    app[DIRECT_ROUTES] = {("POST", PATH): handler}
    app[DIRECT_BODY_LIMIT] = 64
    runner = EdgeAppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def _post(body: bytes = b"{}", extra: str = "", path: str = PATH) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer with a Content-Length off the connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return int(status_line.split()[1]), headers, body


async def _closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except (TimeoutError, ConnectionError):
        return False


def test_a_plain_request_is_direct_and_the_first_other_one_hands_the_connection_to_aiohttp():
    async def scenario():
        handler = Recorder()
        runner, port = await _serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # two direct requests, then one aiohttp must frame (a query string), then a plain one
            # again: pipelined in one write, answered in order
            writer.write(_post(b'{"a":1}') + _post(b'{"a":2}') + _post(b'{"a":3}', path=PATH + "?q=1")
                         + _post(b'{"a":4}'))
            answers = [await _read_answer(reader) for _ in range(4)]
            connections = list(runner.server.connections)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            health = await _read_answer(reader)
            writer.close()
            return handler.seen, answers, connections, health
        finally:
            await runner.cleanup()

    seen, answers, connections, health = asyncio.run(scenario())
    assert [status for status, _, _ in answers] == [200] * 4
    assert [body for _, _, body in answers] == [b'{"echo":{"a":%d}}' % i for i in (1, 2, 3, 4)]
    # handed over at the query string, from its first byte; the connection stays aiohttp's after it
    assert seen == [("direct", b'{"a":1}'), ("direct", b'{"a":2}'), ("aiohttp", b'{"a":3}'),
                    ("aiohttp", b'{"a":4}')]
    assert len(connections) == 1 and not isinstance(connections[0], DirectConnection)
    assert health[0] == 200 and health[2] == b"ok"


def test_what_the_direct_path_does_not_frame_goes_to_aiohttp():
    cases = {
        "chunked": b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "http/1.0": b"POST %s HTTP/1.0\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
        "expect": b"POST %s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        "bare LF": b"POST %s HTTP/1.1\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
        "plain": b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
    }

    async def scenario():
        handler = Recorder()
        runner, port = await _serve(handler)
        try:
            kinds = {}
            for name, raw in cases.items():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw % PATH.encode())
                await reader.readuntil(b"\r\n\r\n")
                kinds[name] = handler.seen[-1] if handler.seen else None
                writer.close()
            return kinds
        finally:
            await runner.cleanup()

    kinds = asyncio.run(scenario())
    assert kinds.pop("plain") == ("direct", b"{}")
    assert kinds == {name: ("aiohttp", b"{}") for name in kinds}


def test_a_body_in_pieces_is_awaited_and_the_next_request_waits_for_the_answer():
    async def scenario():
        handler = Recorder()
        runner, port = await _serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            raw = _post(b'{"split":"body"}')
            for piece in (raw[:10], raw[10:-8], raw[-8:-3]):
                writer.write(piece)
                await asyncio.sleep(0.02)
            assert handler.seen == []          # the head is in, the body is not: nothing answered yet
            writer.write(raw[-3:] + _post(b'{"next":1}'))
            first, second = await _read_answer(reader), await _read_answer(reader)
            writer.close()
            return handler.seen, first, second
        finally:
            await runner.cleanup()

    seen, first, second = asyncio.run(scenario())
    assert seen == [("direct", b'{"split":"body"}'), ("direct", b'{"next":1}')]
    assert first[2] == b'{"echo":{"split":"body"}}' and second[2] == b'{"echo":{"next":1}}'


def test_a_client_that_goes_away_cancels_its_handler_and_the_server_forgets_the_connection():
    async def scenario():
        handler = Recorder(wait=asyncio.Event())
        runner, port = await _serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post())
            while not handler.seen:
                await asyncio.sleep(0.01)
            registered = len(runner.server.connections)
            writer.close()
            for _ in range(200):
                if handler.cancelled and not runner.server.connections:
                    break
                await asyncio.sleep(0.01)
            return registered, handler.cancelled, len(runner.server.connections)
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == (1, 1, 0)


def test_an_answer_before_the_body_is_read_whole_then_the_connection_closes():
    async def scenario():
        handler = Recorder()
        runner, port = await _serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = b"x" * 100_000        # over the limit of 64: answered 413 from the head alone
            writer.write(_post(body)[:-50_000])
            answer = await _read_answer(reader)
            writer.write(body[-50_000:])  # the rest still arrives: read and dropped, no reset
            await writer.drain()
            closed = await _closed(reader)
            writer.close()
            return answer, closed, handler.seen
        finally:
            await runner.cleanup()

    answer, closed, seen = asyncio.run(scenario())
    assert answer[0] == 413 and answer[2] == b'{"error":"too large"}'
    assert answer[1].get("connection") == "close" and closed
    assert seen == [("direct", b"<too large>")]


def test_an_idle_connection_closes_after_the_keepalive_timeout_but_not_during_a_request():
    async def scenario():
        gate = asyncio.Event()
        handler = Recorder(wait=gate)
        runner, port = await _serve(handler, keepalive_timeout=0.3)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post())
            await asyncio.sleep(0.8)             # past the timeout while the handler still runs
            gate.set()
            answer = await _read_answer(reader)
            closed_after_idle = await _closed(reader, within=3.0)
            writer.close()
            return answer[0], closed_after_idle
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == (200, True)


def test_connection_close_and_a_drain_close_after_the_answer():
    async def scenario():
        handler = Recorder()
        runner, port = await _serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post(extra="Connection: close\r\n"))
            asked = await _read_answer(reader), await _closed(reader)
            writer.close()
            runner.server.draining = lambda: True
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post())
            drained = await _read_answer(reader), await _closed(reader)
            writer.close()
            return asked, drained
        finally:
            await runner.cleanup()

    for (status, headers, _), closed in asyncio.run(scenario()):
        assert status == 200 and headers.get("connection") == "close" and closed


def test_many_pipelined_requests_pause_reading_and_are_all_answered_in_order():
    async def scenario():
        gate = asyncio.Event()
        handler = Recorder(wait=gate)
        runner, port = await _serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # ~60 KB behind a request that waits: more than the connection buffers before it
            # stops reading, so reading pauses and resumes as the queue is answered
            pieces = [b"".join(_post(b'{"n":%d}' % i) for i in range(start, start + 50))
                      for start in range(0, 600, 50)]
            for piece in pieces:      # one read each, more or less
                writer.write(piece)
                await asyncio.sleep(0.02)
            buffered = len(runner.server.connections[0]._buffer)
            limit = MAX_HEAD_BYTES * 4 + max(map(len, pieces))
            gate.set()
            bodies = [(await _read_answer(reader))[2] for _ in range(600)]
            writer.close()
            return buffered, limit, sum(map(len, pieces)), bodies
        finally:
            await runner.cleanup()

    buffered, limit, sent, bodies = asyncio.run(scenario())
    assert buffered <= limit < sent      # reading paused: what was sent past the limit waited in the socket
    assert bodies == [b'{"echo":{"n":%d}}' % i for i in range(600)]
