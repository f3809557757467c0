"""The data routes' direct path, in process over real HTTP on 127.0.0.1.

``protocol.direct_dispatch`` sends an exact (method, raw path) match of the app's
``DIRECT_ROUTES`` straight to its handler and everything else through the Application
(router, middleware); ``answer.write_json`` writes a whole JSON answer as the bytes aiohttp's
``web.Response`` would, and ``answer.stream_head`` with ``ClientStream`` a relayed stream as its
``StreamResponse`` would. All are checked against aiohttp's own behaviour on the same server.
"""
from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web
from hypothesis import given, settings, strategies as st

from fastinfer._core import client as compiled_client
from fastinfer._core.ref import client as reference_client
from fastinfer.gateway.answer import WrittenAnswer, _head_bytes, stream_head, write_json
from fastinfer.gateway.protocol import DIRECT_ROUTES, EdgeAppRunner

HEADERS = {"x-request-id": "rid-1", "x-fastinfer-replica": "r0", "x-fastinfer-attempts": "1"}
BODY = b'{"ok":true}'


async def _serve(app: web.Application):
    runner = EdgeAppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def _exchange(port: int, raw: bytes) -> bytes:
    """``raw`` sent on a fresh connection; everything the server sends until it closes (or 1 s of quiet)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 1.0):
            chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


def _post(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Length: 2\r\n{extra}\r\n{{}}").encode()


def _head_and_body(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}, body


def _side_by_side(ours, theirs, requests: list[tuple[str, str]], kept: bytes) -> tuple[list[list[bytes]], bytes]:
    """``ours`` served at ``/ours`` and ``theirs`` (aiohttp's own way) at ``/aiohttp``: each (query, extra
    headers) of ``requests`` asked of both, each on a new connection; then the raw requests ``kept``
    on one connection. Returns the answer pairs and what came back on that connection."""
    async def scenario():
        app = web.Application()
        app.router.add_post("/ours", ours)
        app.router.add_post("/aiohttp", theirs)
        runner, port = await _serve(app)
        try:
            pairs = [[await _exchange(port, _post(path + query, extra)) for path in ("/ours", "/aiohttp")]
                     for query, extra in requests]
            return pairs, await _exchange(port, kept)
        finally:
            await runner.cleanup()
    return asyncio.run(scenario())


def _same_answers(pairs: list[list[bytes]]) -> list[tuple[str, dict[str, str], bytes]]:
    """Each (ours, aiohttp's) pair of answers is the same 200 but for the date; ours, parsed."""
    parsed = []
    for ours, theirs in pairs:
        ours, theirs = _head_and_body(ours), _head_and_body(theirs)
        assert ours[0] == theirs[0] == "HTTP/1.1 200 OK"
        assert {k: v for k, v in ours[1].items() if k != "date"} == {k: v for k, v in theirs[1].items() if k != "date"}
        assert ours[2] == theirs[2]
        parsed.append(ours)
    return parsed


def test_an_exact_data_route_goes_direct_and_anything_else_through_the_app():
    seen = []

    def answering(how: str):
        async def handler(request):
            seen.append(how)
            return web.Response(body=BODY, content_type="application/json")
        return handler

    async def scenario():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answering("router"))
        app[DIRECT_ROUTES] = {("POST", "/v1/chat/completions"): answering("direct")}
        runner, port = await _serve(app)
        try:
            answers = [await _exchange(port, _post("/v1/chat/completions", "Connection: close\r\n")),
                       await _exchange(port, _post("/v1/chat/completions?x=1", "Connection: close\r\n")),
                       await _exchange(port, _post("/v1/chat/completions", "Expect: 100-continue\r\n"
                                                   "Connection: close\r\n")),
                       await _exchange(port, b"GET /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
                       await _exchange(port, _post("/v1/chat/completion", "Connection: close\r\n"))]
        finally:
            await runner.cleanup()
        return answers

    answers = asyncio.run(scenario())
    statuses = [_head_and_body(a)[0] for a in answers]
    assert statuses[:2] == ["HTTP/1.1 200 OK"] * 2
    assert statuses[2] == "HTTP/1.1 100 Continue" and b"HTTP/1.1 200 OK\r\n" in answers[2]  # the app's expect handler
    assert statuses[3].startswith("HTTP/1.1 405") and statuses[4].startswith("HTTP/1.1 404")
    # the exact match skipped the router; the query string and Expect took it
    assert seen == ["direct", "router", "router"]


def test_a_written_answer_is_what_aiohttp_would_write():
    async def written(request):
        return write_json(request, 200, dict(HEADERS), BODY, request.keep_alive)

    async def aiohttp_own(request):
        return web.Response(status=200, body=BODY, content_type="application/json", headers=dict(HEADERS))

    # and two requests on one kept-alive connection: both answered, in order
    pairs, pipelined = _side_by_side(written, aiohttp_own, [("", ""), ("", "Connection: close\r\n")],
                                     _post("/ours") + _post("/ours", "Connection: close\r\n"))
    for ours in _same_answers(pairs):
        assert ours[2] == BODY
    assert "connection" not in _head_and_body(pairs[0][0])[1]
    assert _head_and_body(pairs[1][0])[1]["connection"] == "close"
    assert pipelined.count(b"HTTP/1.1 200 OK\r\n") == 2 and pipelined.endswith(BODY)


CHUNKS = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n']


@pytest.mark.parametrize("core", [compiled_client, reference_client], ids=["compiled", "python"])
def test_a_stream_with_its_own_head_is_what_aiohttp_would_write(core):
    """``stream_head`` + ``ClientStream`` (compiled, and its source run as Python) against aiohttp's
    ``StreamResponse`` with the same headers: the same head (but its date) and the same chunked body,
    events and the ending (``done``: an ending with no event before it, a stream read whole, which goes
    out with the head); kept alive."""
    ClientStream = core.ClientStream

    async def own(request):
        chunks = CHUNKS[:int(request.query["n"])]
        keep_alive = request.keep_alive
        client = ClientStream(request.writer, request.transport,
                              stream_head(request, 200, dict(HEADERS), keep_alive))
        for chunk in chunks:
            client.write(chunk)
        client.end(b"data: [DONE]\n\n" if chunks or "done" in request.query else b"")
        return WrittenAnswer(200, keep_alive, request.writer)

    async def aiohttp_own(request):
        chunks = CHUNKS[:int(request.query["n"])]
        response = web.StreamResponse(status=200, headers={**HEADERS, "Content-Type": "text/event-stream",
                                                           "Cache-Control": "no-cache"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof(b"data: [DONE]\n\n" if chunks or "done" in request.query else b"")
        return response

    pairs, kept = _side_by_side(own, aiohttp_own, [("?n=2", ""), ("?n=0", "Connection: close\r\n"),
                                                   ("?n=0&done=1", "")],
                                _post("/ours?n=2") + _post("/ours?n=1", "Connection: close\r\n"))
    for ours in _same_answers(pairs):
        assert ours[1]["transfer-encoding"] == "chunked" and ours[1]["content-type"] == "text/event-stream"
        assert ours[2].endswith(b"0\r\n\r\n")
    assert b"".join(CHUNKS) in _decode_chunked(_head_and_body(pairs[0][0])[2])
    assert _head_and_body(pairs[1][0])[2] == b"0\r\n\r\n"        # nothing streamed: the head, the last chunk
    assert _head_and_body(pairs[2][0])[2] == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"    # the head, the ending, the last
    assert kept.count(b"HTTP/1.1 200 OK\r\n") == 2 and kept.endswith(b"0\r\n\r\n")


def _decode_chunked(body: bytes) -> bytes:
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out, body = out + rest[:n], rest[n + 2:]


def test_what_the_precomputed_head_cannot_say_is_left_to_aiohttp_and_an_unnamed_status_is_its_line():
    results = []

    async def handler(request):
        status = int(request.query["status"])
        answer = write_json(request, status, dict(HEADERS), b"" if status == 204 else BODY, True)
        results.append(answer is None)
        return answer or web.Response(status=status, body=None if status == 204 else BODY,
                                      content_type="application/json", headers=dict(HEADERS))

    async def scenario():
        app = web.Application()
        app.router.add_post("/answer", handler)
        runner, port = await _serve(app)
        try:
            http10 = await _exchange(port, _post("/answer?status=200", "Connection: keep-alive\r\n", "1.0"))
            no_content = await _exchange(port, _post("/answer?status=204", "Connection: close\r\n"))
            unnamed = await _exchange(port, _post("/answer?status=299", "Connection: close\r\n"))
        finally:
            await runner.cleanup()
        return http10, no_content, unnamed

    http10, no_content, unnamed = asyncio.run(scenario())
    # HTTP/1.0 and a 204: aiohttp wrote them; an unnamed status is written with aiohttp's line for it
    assert results == [True, True, False]
    status, headers, _ = _head_and_body(http10)
    assert status == "HTTP/1.0 200 OK" and headers["connection"] == "keep-alive"
    assert _head_and_body(no_content)[0] == "HTTP/1.1 204 No Content"
    assert _head_and_body(unnamed)[0] == "HTTP/1.1 299 "


def test_a_header_with_a_line_break_is_refused_not_written():
    async def handler(request):
        try:
            write_json(request, 200, {"x-bad": "a\r\nInjected: yes"}, BODY, True)
        except ValueError:
            return web.Response(status=500, text="refused")
        return web.Response(text="written")

    async def scenario():
        app = web.Application()
        app.router.add_post("/bad", handler)
        runner, port = await _serve(app)
        try:
            return await _exchange(port, _post("/bad", "Connection: close\r\n"))
        finally:
            await runner.cleanup()

    answer = asyncio.run(scenario())
    assert b"Injected" not in answer and answer.endswith(b"refused")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=24), max_size=5))
def test_a_head_is_refused_exactly_when_a_field_holds_a_control_character_but_tab(headers):
    """aiohttp's rule (its header serializer's): no C0 control character but tab, no DEL, in a
    name or a value; anything else (tab, any non-ASCII character) is written, as UTF-8."""
    forbidden = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
    refused = any(forbidden.search(name) or forbidden.search(value) for name, value in headers.items())
    try:
        head = _head_bytes(200, headers, b"Content-Type: application/json\r\n", 0, True)
    except ValueError:
        assert refused
    else:
        assert not refused
        assert all(f"{name}: {value}\r\n".encode() in head for name, value in headers.items())
