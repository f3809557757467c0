"""``_core.client.DirectConnection``, in process over real sockets on 127.0.0.1.

A plain data request is served by the connection itself (its handler sees a ``DirectRequest``);
anything else, from that request's first byte on, by aiohttp (a ``web.Request``), and the
connection stays aiohttp's. The connection registers with aiohttp's server as aiohttp's own do,
waits for a body that comes in pieces, answers one request at a time, lets a client that went
away cancel its handler, reads a body it answered early before it closes, and closes when idle.

Every test runs twice: over the compiled connection the gateway runs (``_core.client``) and over its
plain-Python reference (``_core.ref.client``).
"""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from aiohttp import web
from hypothesis import given, settings, strategies as st

from fastinfer._core import client as compiled
from fastinfer._core.client import MAX_HEAD_BYTES
from fastinfer._core.ref import client as reference
from fastinfer.gateway.protocol import DIRECT_BODY_LIMIT, DIRECT_ROUTES, EdgeAppRunner, _EdgeServer

PATH = "/v1/chat/completions"


@pytest.fixture(autouse=True, scope="module", params=["compiled", "reference"])
def core(request):
    """The module every server of the test makes its direct connections from (``_EdgeServer.core``)."""
    made = _EdgeServer.core
    _EdgeServer.core = {"compiled": compiled, "reference": reference}[request.param]
    yield _EdgeServer.core
    _EdgeServer.core = made


class Recorder:
    """A data route's handler that answers its body back and records who called it with what."""

    def __init__(self, wait: asyncio.Event | None = None):
        self.seen: list[tuple[str, bytes]] = []
        self.requests: list[weakref.ref] = []
        self.cancelled = 0
        self.wait = wait
        self.tasks: list[asyncio.Task] = []     # the task each call ran in

    async def __call__(self, request) -> web.Response:
        kind = "direct" if isinstance(request, _EdgeServer.core.DirectRequest) else "aiohttp"
        self.requests.append(weakref.ref(request))
        self.tasks.append(asyncio.current_task())
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


class Scene:
    """A server with a ``Recorder`` on its data route, and one client connection to it."""

    def __init__(self, handler: Recorder, runner: web.AppRunner, port: int):
        self.handler, self.runner, self.port = handler, runner, port
        self.reader = self.writer = None

    async def connect(self) -> Scene:
        if self.writer is not None:
            self.writer.close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        return await _read_answer(self.reader)

    async def closed(self, within: float = 5.0) -> bool:
        return await _closed(self.reader, within)


def _run(client, *, waits: bool = False, keepalive_timeout: float = 75.0):
    """``client(scene)`` against a fresh server; what it returns. ``waits``: each handler call
    waits for ``scene.handler.wait`` to be set before it answers."""
    async def scenario():
        handler = Recorder(wait=asyncio.Event() if waits else None)
        runner, port = await _serve(handler, keepalive_timeout=keepalive_timeout)
        scene = Scene(handler, runner, port)
        try:
            return await client(await scene.connect())
        finally:
            scene.writer.close()
            await runner.cleanup()
    return asyncio.run(scenario())


async def _closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except (TimeoutError, ConnectionError):
        return False


def test_a_plain_request_is_direct_and_the_first_other_one_hands_the_connection_to_aiohttp():
    async def client(scene: Scene):
        # two direct requests, then one aiohttp must frame (a query string), then a plain one
        # again: pipelined in one write, answered in order
        scene.send(_post(b'{"a":1}') + _post(b'{"a":2}') + _post(b'{"a":3}', path=PATH + "?q=1")
                   + _post(b'{"a":4}'))
        answers = [await scene.answer() for _ in range(4)]
        connections = list(scene.runner.server.connections)
        scene.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        return scene.handler.seen, answers, connections, await scene.answer()

    seen, answers, connections, health = _run(client)
    assert [status for status, _, _ in answers] == [200] * 4
    assert [body for _, _, body in answers] == [b'{"echo":{"a":%d}}' % i for i in (1, 2, 3, 4)]
    # handed over at the query string, from its first byte; the connection stays aiohttp's after it
    assert seen == [("direct", b'{"a":1}'), ("direct", b'{"a":2}'), ("aiohttp", b'{"a":3}'),
                    ("aiohttp", b'{"a":4}')]
    assert len(connections) == 1 and not isinstance(connections[0], _EdgeServer.core.DirectConnection)
    assert health[0] == 200 and health[2] == b"ok"


def test_what_the_direct_path_does_not_frame_goes_to_aiohttp():
    cases = {
        "chunked": b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "http/1.0": b"POST %s HTTP/1.0\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
        "expect": b"POST %s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        "bare LF": b"POST %s HTTP/1.1\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
        "plain": b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
    }

    async def client(scene: Scene):
        kinds = {}
        for name, raw in cases.items():
            await scene.connect()
            scene.send(raw % PATH.encode())
            await scene.reader.readuntil(b"\r\n\r\n")
            kinds[name] = scene.handler.seen[-1] if scene.handler.seen else None
        return kinds

    kinds = _run(client)
    assert kinds.pop("plain") == ("direct", b"{}")
    assert kinds == {name: ("aiohttp", b"{}") for name in kinds}


def test_a_body_in_pieces_is_awaited_and_the_next_request_waits_for_the_answer():
    async def client(scene: Scene):
        raw = _post(b'{"split":"body"}')
        for piece in (raw[:10], raw[10:-8], raw[-8:-3]):
            scene.send(piece)
            await asyncio.sleep(0.02)
        early = list(scene.handler.seen)    # the head is in, the body is not: nothing answered yet
        scene.send(raw[-3:] + _post(b'{"next":1}'))
        return early, scene.handler.seen, await scene.answer(), await scene.answer()

    early, seen, first, second = _run(client)
    assert early == []
    assert seen == [("direct", b'{"split":"body"}'), ("direct", b'{"next":1}')]
    assert first[2] == b'{"echo":{"split":"body"}}' and second[2] == b'{"echo":{"next":1}}'


def test_a_client_that_goes_away_cancels_its_handler_and_the_server_forgets_the_connection():
    async def client(scene: Scene):
        scene.send(_post())
        while not scene.handler.seen:
            await asyncio.sleep(0.01)
        server = scene.runner.server
        registered = len(server.connections)
        scene.writer.close()
        for _ in range(200):
            if scene.handler.cancelled and not server.connections:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)     # the cancelled task's last step
        return registered, scene.handler.cancelled, len(server.connections), scene.handler.requests

    gc.disable()        # what is freed below is freed by reference counts alone: no cycle is left
    try:
        registered, cancelled, left, requests = _run(client, waits=True)
        freed = [ref() is None for ref in requests]
    finally:
        gc.enable()
    assert (registered, cancelled, left) == (1, 1, 0)
    # the request (its transport, whose protocol is the connection) went with its task; a cycle
    # through the connection kept such requests, with their upstream exchanges, until a full
    # collection, and a worker's memory crept up by ~1 MiB per 500,000 requests under wrk
    assert freed == [True]


def test_an_answer_before_the_body_is_read_whole_then_the_connection_closes():
    async def client(scene: Scene):
        body = b"x" * 100_000        # over the limit of 64: answered 413 from the head alone
        scene.send(_post(body)[:-50_000])
        answer = await scene.answer()
        scene.send(body[-50_000:])   # the rest still arrives: read and dropped, no reset
        await scene.writer.drain()
        return answer, await scene.closed(), scene.handler.seen

    answer, closed, seen = _run(client)
    assert answer[0] == 413 and answer[2] == b'{"error":"too large"}'
    assert answer[1].get("connection") == "close" and closed
    assert seen == [("direct", b"<too large>")]


def test_an_idle_connection_closes_after_the_keepalive_timeout_but_not_during_a_request():
    async def client(scene: Scene):
        scene.send(_post())
        await asyncio.sleep(0.8)             # past the timeout while the handler still runs
        scene.handler.wait.set()
        return (await scene.answer())[0], await scene.closed(within=3.0)

    assert _run(client, waits=True, keepalive_timeout=0.3) == (200, True)


def test_connection_close_and_a_drain_close_after_the_answer():
    async def client(scene: Scene):
        scene.send(_post(extra="Connection: close\r\n"))
        asked = await scene.answer(), await scene.closed()
        scene.runner.server.draining = lambda: True
        await scene.connect()
        scene.send(_post())
        return asked, (await scene.answer(), await scene.closed())

    for (status, headers, _), closed in _run(client):
        assert status == 200 and headers.get("connection") == "close" and closed


@pytest.mark.parametrize("extra", ["Connection: close\r\n",
                                   # outside the compiled reader's subset: llhttp reads this head
                                   "X-Note: caf\u00e9\r\nConnection: close\r\n"])
def test_a_request_without_a_body_that_says_close_is_answered_directly_and_closed(extra):
    async def client(scene: Scene):
        scene.send(_post(b"", extra=extra))
        return await scene.answer(), await scene.closed()

    (status, headers, _), closed = _run(client)
    assert status == 200 and headers["x-kind"] == "direct" and headers.get("connection") == "close" and closed


def test_many_pipelined_requests_pause_reading_and_are_all_answered_in_order():
    async def client(scene: Scene):
        # ~60 KB behind a request that waits: more than the connection buffers before it
        # stops reading, so reading pauses and resumes as the queue is answered
        pieces = [b"".join(_post(b'{"n":%d}' % i) for i in range(start, start + 50))
                  for start in range(0, 600, 50)]
        for piece in pieces:      # one read each, more or less
            scene.send(piece)
            await asyncio.sleep(0.02)
        buffered = len(scene.runner.server.connections[0]._buffer)
        limit = MAX_HEAD_BYTES * 4 + max(map(len, pieces))
        scene.handler.wait.set()
        bodies = [(await scene.answer())[2] for _ in range(600)]
        return buffered, limit, sum(map(len, pieces)), bodies

    buffered, limit, sent, bodies = _run(client, waits=True)
    assert buffered <= limit < sent      # reading paused: what was sent past the limit waited in the socket
    assert bodies == [b'{"echo":{"n":%d}}' % i for i in range(600)]


_KINDS = {
    "direct": lambda i: _post(b'{"i":%d}' % i),
    "query": lambda i: _post(b'{"i":%d}' % i, path=PATH + "?q=1"),
    "chunked": lambda i: (f"POST {PATH} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                          + b"%x\r\n" % len(b'{"i":%d}' % i) + b'{"i":%d}' % i + b"\r\n0\r\n\r\n"),
}


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8))
def test_pipelined_requests_of_any_kind_cut_anywhere_are_answered_in_order(kinds, cuts):
    """However the bytes of a run of requests are split into reads, and wherever the connection goes
    to aiohttp, every request is answered once, in order, with its own body."""
    raw = b"".join(_KINDS[kind](i) for i, kind in enumerate(kinds))
    points = sorted({c for c in cuts if c < len(raw)})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)])]

    async def client(scene: Scene):
        for piece in pieces:
            scene.send(piece)
            await scene.writer.drain()
            await asyncio.sleep(0)
        return [await scene.answer() for _ in kinds], scene.handler.seen

    answers, seen = _run(client)
    assert [body for _, _, body in answers] == [b'{"echo":{"i":%d}}' % i for i in range(len(kinds))]
    # direct until the first request aiohttp must frame, aiohttp's from there on
    first_other = next((i for i, kind in enumerate(kinds) if kind != "direct"), len(kinds))
    assert [kind for kind, _ in seen] == ["direct"] * first_other + ["aiohttp"] * (len(kinds) - first_other)


def test_a_connections_requests_run_in_one_task_that_ends_with_the_connection():
    """One task a connection (not one a request): sequential and pipelined requests on one
    connection share it, another connection has its own, and each ends when its connection
    closes or becomes aiohttp's."""
    async def client(scene: Scene):
        scene.send(_post(b"1"))
        await scene.answer()
        scene.send(_post(b"2") + _post(b"3"))
        await scene.answer()
        await scene.answer()
        first = scene.handler.tasks[0]
        await asyncio.sleep(0)
        gc.collect()
        held = [ref() for ref in scene.handler.requests[:3]]    # the waiting task holds none of them
        other = await Scene(scene.handler, scene.runner, scene.port).connect()
        other.send(_post(b"4"))
        await other.answer()
        other.send(_post(b"5", path=PATH + "?q=1"))     # aiohttp's from here: the direct task ends
        await other.answer()
        second = scene.handler.tasks[3]
        await asyncio.wait_for(asyncio.shield(second), 5)
        assert not first.done()                          # its connection is open, waiting
        scene.writer.close()
        await asyncio.wait_for(asyncio.shield(first), 5)
        other.writer.close()
        return scene.handler.tasks, first, second, held
    tasks, first, second, held = _run(client)
    assert held == [None, None, None]
    assert tasks[:3] == [first] * 3 and tasks[3] is second and second is not first
    assert tasks[4] is not second       # aiohttp's request: its own task
    assert first.done() and not first.cancelled() and second.done() and not second.cancelled()


def test_a_direct_request_equals_only_itself_whatever_it_holds(core):
    # as aiohttp's request: a mapping the middleware and handlers keep things on, compared and
    # hashed by identity (a dict would be equal to any other with the same items, and unhashable)
    class Connection:
        transport = None

    body = core.RequestBody(0, 64, None)
    first = core.DirectRequest(PATH, {}, True, body, Connection())
    second = core.DirectRequest(PATH, {}, True, body, Connection())
    first["id"] = second["id"] = "same"
    assert first == first and first != second and not first == second
    assert len({first, second}) == 2 and hash(first) == object.__hash__(first)
    assert weakref.ref(first)() is first


def test_a_body_read_within_a_time_waits_for_its_rest_or_times_out(core):
    async def scenario():
        loop = asyncio.get_running_loop()
        body = core.RequestBody(6, 64, loop)
        assert body.feed(b"abc") == b""
        reading = loop.create_task(body.read_within(5.0))
        await asyncio.sleep(0)
        assert not reading.done()
        assert body.feed(b"defNEXT") == b"NEXT"          # the rest, and the next request's first bytes
        assert await reading == b"abcdef"
        timers = [t for t in loop._scheduled if not t.cancelled()]

        late = core.RequestBody(6, 64, loop)
        late.feed(b"abc")
        started = loop.time()
        with pytest.raises(TimeoutError):
            await late.read_within(0.05)
        assert loop.time() - started >= 0.04
        late.feed(b"def")                                # what comes after the timeout is kept, not an error
        assert late.complete
        return timers

    loop = asyncio.new_event_loop()     # asyncio's own: its timers are visible
    try:
        assert loop.run_until_complete(scenario()) == []   # the first read's timer was cancelled
    finally:
        loop.close()
