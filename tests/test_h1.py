"""The upstream HTTP/1.1 client: response framing under any split of the bytes, malformed answers, pooling, timeouts.

Every test runs twice: over the compiled connection the gateway runs (``_core.upstream``) and over
its plain-Python reference (``_core.ref.upstream``)."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastinfer.engine.classify import classify_exception
from fastinfer.errors import ClientTooSlow, UpstreamFailure, UpstreamTimeout
from fastinfer._core import upstream as compiled
from fastinfer._core.ref import upstream as reference
from fastinfer.transport.h1 import Sink as SinkBase, build_request
from fastinfer.transport.pool import Pool
from fastinfer._core.states import CLOSED, IDLE, MAX_FRAMING


@pytest.fixture(autouse=True, scope="module", params=["compiled", "reference"])
def core(request):
    """The connections and kept-alive lists every pool of the test makes (``Pool.core``), and the
    connections ``connection`` makes. Module-scoped: hypothesis's tests may not take a
    function-scoped fixture."""
    made = Pool.core
    Pool.core = {"compiled": compiled, "reference": reference}[request.param]
    yield Pool.core
    Pool.core = made


def connection(pool, loop: asyncio.AbstractEventLoop):
    """A connection of the kind under test, not yet connected."""
    return Pool.core.H1Connection(pool, loop)


class FakeTransport:
    def __init__(self):
        self.written = []
        self.closed = self.aborted = self.paused = False

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


class Sink(SinkBase):
    def __init__(self):
        self.status = None
        self.headers = None
        self.data = []
        self.ended = []

    def on_head(self, status, headers):
        self.status, self.headers = status, headers

    def on_data(self, data):
        assert not self.ended
        self.data.append(data)

    def on_end(self, error):
        self.ended.append(error)


class Timeouts:
    connect_s = first_byte_s = idle_s = total_s = 30.0


def exchange(pieces: list[bytes], sink: Sink | None = None):
    """Feed a response to a fresh connection in ``pieces``; (sink, connection, pool)."""
    pool = Pool("http://127.0.0.1:1/v1")
    conn = connection(pool, asyncio.get_running_loop())
    conn.connection_made(FakeTransport())
    sink = sink or Sink()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", sink, Timeouts)
    for piece in pieces:
        conn.data_received(piece)
    return sink, conn, pool


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
           b"7\r\ndata: a\r\n5;ext=1\r\n\n\ndat\r\n0b\r\na: [DONE]\n\n\r\n0\r\nX-Trailer: t\r\n\r\n")
CHUNKED_BODY = b"data: a\n\ndata: [DONE]\n\n"
LENGTH = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\nX-Thing:  spaced \r\n\r\n{\"error\":1}"


async def in_loop(fn):
    return fn()


def run(fn):
    return asyncio.run(in_loop(fn))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_chunked_body_survives_any_split(cuts):
    sink, conn, pool = run(lambda: exchange(split(CHUNKED, cuts)))
    assert sink.status == 200
    assert b"".join(sink.data) == CHUNKED_BODY
    assert sink.ended == [None]
    assert pool._kept.idle == [conn]  # the whole body was read: the connection goes back to the pool


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_content_length_body_survives_any_split(cuts):
    sink, conn, pool = run(lambda: exchange(split(LENGTH, cuts)))
    assert sink.status == 400
    assert sink.headers["x-thing"] == "spaced"
    assert b"".join(sink.data) == b'{"error":1}'
    assert sink.ended == [None]


def test_connection_close_is_not_reused_and_interim_answers_are_skipped():
    response = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n"
                b"Content-Length: 2\r\n\r\nok")
    sink, conn, pool = run(lambda: exchange([response]))
    assert sink.status == 200 and b"".join(sink.data) == b"ok" and sink.ended == [None]
    assert pool._kept.idle == [] and conn.transport is None or conn.transport.closed


def test_body_until_close():
    def go():
        sink, conn, pool = exchange([b"HTTP/1.1 200 OK\r\n\r\nsome", b" bytes"])
        conn.connection_lost(None)
        return sink
    sink = run(go)
    assert b"".join(sink.data) == b"some bytes" and sink.ended == [None]


@pytest.mark.parametrize("response, message", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunked"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "oversized response head"),
])
def test_garbage_from_the_upstream_is_an_upstream_failure(response, message):
    sink, conn, _ = run(lambda: exchange([response]))
    (error,) = sink.ended
    assert isinstance(error, UpstreamFailure) and message in error.message
    assert conn.transport.aborted


def test_a_connection_lost_mid_body_is_reported_as_cut():
    def go():
        sink, conn, _ = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"])
        conn.connection_lost(ConnectionResetError())
        return sink
    sink = run(go)
    (error,) = sink.ended
    assert isinstance(error, UpstreamFailure) and "mid-stream" in error.message


def test_build_request_frames_headers_and_body():
    raw = build_request("POST", "/v1/chat/completions", "api.example:443", {"Authorization": "Bearer k"}, b"{}")
    head, body = raw.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Host: api.example:443" in lines and b"Content-Length: 2" in lines
    assert b"Authorization: Bearer k" in lines and body == b"{}"
    assert b"Accept-Encoding: identity" in lines  # relayed bodies must not arrive compressed


def test_build_request_frames_each_request_with_its_own_length_credential_and_path():
    first = build_request("POST", "/v1/chat/completions", "h:1", {"Authorization": "Bearer a"}, b"{}")
    longer = build_request("POST", "/v1/chat/completions", "h:1", {"Authorization": "Bearer a"}, b"[1, 2]")
    rotated = build_request("POST", "/v1/chat/completions", "h:1", {"Authorization": "Bearer b"}, b"{}")
    other = build_request("POST", "/v1/embeddings", "h:1", {"Authorization": "Bearer a"}, b"{}")
    assert first.endswith(b"Content-Length: 2\r\n\r\n{}")
    assert longer.endswith(b"Content-Length: 6\r\n\r\n[1, 2]")
    assert rotated == first.replace(b"Bearer a", b"Bearer b")
    assert other.startswith(b"POST /v1/embeddings HTTP/1.1\r\n") and b"Bearer a" in other


def test_pool_paths_and_origin():
    pool = Pool("https://user:pw@api.example/v1/")
    assert (pool.host, pool.port, pool.tls, pool.host_header) == ("api.example", 443, True, "api.example")
    assert pool.path_of("https://user:pw@api.example/v1/chat/completions") == "/v1/chat/completions"


def test_first_byte_and_idle_watchdog():
    async def go():
        pool = Pool("http://127.0.0.1:1/v1")
        conn = connection(pool, asyncio.get_running_loop())
        conn.connection_made(FakeTransport())
        sink = Sink()

        class Short:
            connect_s, first_byte_s, idle_s, total_s = 1.0, 0.05, 0.08, 5.0

        conn.send(b"x", sink, Short)
        await asyncio.sleep(0.12)
        first = sink.ended[:]
        conn2 = connection(pool, asyncio.get_running_loop())
        conn2.connection_made(FakeTransport())
        sink2 = Sink()
        conn2.send(b"x", sink2, Short)
        conn2.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        for _ in range(4):           # keep it busy past the first-byte limit
            await asyncio.sleep(0.03)
            conn2.data_received(b"1\r\nx\r\n")
        assert sink2.ended == []
        await asyncio.sleep(0.2)     # then silence past idle_s
        return first, sink2.ended, conn2.transport.aborted
    first, second, aborted = asyncio.run(go())
    assert len(first) == 1 and isinstance(first[0], UpstreamTimeout) and "did not answer" in first[0].message
    assert len(second) == 1 and isinstance(second[0], UpstreamTimeout) and "idle" in second[0].message
    assert aborted


def streaming(timeouts):
    """(connection, sink) of an exchange whose chunked answer has begun (one chunk read); in a loop."""
    conn = connection(Pool("http://127.0.0.1:1/v1"), asyncio.get_running_loop())
    conn.connection_made(FakeTransport())
    sink = Sink()
    conn.send(b"x", sink, timeouts)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    return conn, sink


def test_a_paused_read_is_not_the_upstreams_silence():
    """A client reading slower than the upstream sends pauses the upstream's reads: that wait is the
    gateway's, never the upstream idle past ``idle_s`` (the replica would be charged a timeout and its
    circuit opened by slow clients). The idle clock restarts on ``resume``; ``total_s`` still holds."""
    class Short:
        connect_s, first_byte_s, idle_s, total_s = 1.0, 0.05, 0.05, 0.6

    async def go():
        conn, sink = streaming(Short)
        conn.pause()
        await asyncio.sleep(0.2)         # four idle limits while the gateway does not read
        paused = sink.ended[:]
        conn.resume()
        await asyncio.sleep(0.02)
        conn.data_received(b"1\r\nx\r\n")
        resumed = sink.ended[:]
        await asyncio.sleep(0.15)        # then the upstream's own silence
        return paused, resumed, sink.ended
    paused, resumed, ended = asyncio.run(go())
    assert paused == [] and resumed == []
    assert len(ended) == 1 and isinstance(ended[0], UpstreamTimeout) and "idle" in ended[0].message


def test_a_stream_past_its_total_time_while_its_client_holds_it_back_is_the_clients_timeout():
    """``total_s`` passing while the gateway does not read (its client is slower than the upstream)
    ends the stream as the client's doing (``ClientTooSlow``, no breaker failure); passing while the
    gateway reads, as the upstream's (``UpstreamTimeout``)."""
    class Short:
        connect_s, first_byte_s, idle_s, total_s = 1.0, 1.0, 1.0, 0.1

    async def go(paused: bool):
        conn, sink = streaming(Short)
        if paused:
            conn.pause()
        await asyncio.sleep(0.25)
        return sink.ended
    held_back, read = asyncio.run(go(True)), asyncio.run(go(False))
    assert len(held_back) == 1 and isinstance(held_back[0], ClientTooSlow), held_back
    assert "client" in held_back[0].message and classify_exception(held_back[0]).breaker is False
    assert len(read) == 1 and type(read[0]) is UpstreamTimeout and "total timeout" in read[0].message, read
    assert classify_exception(read[0]).breaker is True


async def _second_exchange(first, second, pause_s: float = 0.0):
    """A kept connection: an exchange answered under the limits ``first``, then, ``pause_s`` later,
    one sent under ``second`` that is never answered. (Whether the second kept the timer the first
    left, how the second ended, how long it took (2 s at most), the timer left after.)"""
    loop = asyncio.get_running_loop()
    pool = Pool("http://127.0.0.1:1/v1")
    conn = connection(pool, loop)
    conn.connection_made(FakeTransport())
    conn.send(b"x", Sink(), first)
    kept = conn._timer
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    pool._kept.idle.remove(conn)
    await asyncio.sleep(pause_s)
    sink = Sink()
    sent_at = loop.time()
    conn.send(b"x", sink, second)
    same_timer = conn._timer is kept
    while not sink.ended and loop.time() - sent_at < 2:
        await asyncio.sleep(0.01)
    waited = loop.time() - sent_at
    conn.connection_lost(None)
    return same_timer, sink.ended, waited, conn._timer


def test_the_watchdog_left_from_one_exchange_times_out_the_next_and_goes_with_the_connection():
    """A timer left armed after an answer is kept by the next ``send`` (it fires no later than that
    exchange's limit, checks and re-arms); the second exchange still times out at its own limit."""
    class Short:
        connect_s, first_byte_s, idle_s, total_s = 1.0, 0.1, 0.1, 5.0

    same_timer, ended, waited, timer_after = asyncio.run(_second_exchange(Short, Short, 0.05))
    assert same_timer
    assert len(ended) == 1 and isinstance(ended[0], UpstreamTimeout) and "did not answer" in ended[0].message
    assert waited >= 0.1                     # its own limit, not the first exchange's earlier one
    assert timer_after is None


def test_an_exchange_under_other_limits_on_a_kept_connection_is_held_to_them():
    """An exchange on a kept connection with other limits than the last one's (a reload's, or another
    deployment's) is timed by its own: a total of 0.15 s, not the first's 30 s."""
    class Tight:
        connect_s, first_byte_s, idle_s, total_s = 1.0, 5.0, 5.0, 0.15

    _, ended, waited, _ = asyncio.run(_second_exchange(Timeouts, Tight))
    assert len(ended) == 1 and isinstance(ended[0], UpstreamTimeout) and "total timeout of 0.15s" in ended[0].message
    assert 0.15 <= waited < 2


@pytest.mark.parametrize("response, message", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n{}", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "malformed HTTP response"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n\x00\x00", "switched protocols"),
], ids=["content-length-not-a-number", "two-content-lengths", "content-length-overflow",
        "content-length-and-chunked", "protocol-switch"])
def test_a_malformed_answer_fails_the_exchange_and_never_raises(response, message):
    for pieces in ([response], split(response, list(range(0, len(response), 997)))):
        sink, conn, pool = run(lambda: exchange(pieces))   # data_received raising would fail here
        (error,) = sink.ended
        assert isinstance(error, UpstreamFailure) and message in error.message, error.message
        assert conn.transport.aborted and conn.state is CLOSED and pool._kept.idle == []


@pytest.mark.parametrize("line_start, filler", [(b"", b"0"), (b"5;ext=", b"x")], ids=["zeros", "extension"])
def test_an_endless_chunk_size_line_fails_while_it_is_still_arriving(line_start, filler):
    """llhttp keeps no buffer, but a line that never ends must not hold the exchange: the bytes
    between two pieces of body are limited (counted per read, so at most one read goes unseen)."""
    def go():
        sink, conn, _ = exchange([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n" + line_start])
        reads = 0
        while not sink.ended and reads < 1000:
            conn.data_received(filler * 512)   # a number (or an extension) that never ends
            reads += 1
        return sink, conn, reads
    sink, conn, reads = run(go)
    assert b"".join(sink.data) == b"data"
    (error,) = sink.ended
    assert isinstance(error, UpstreamFailure) and "overlong chunk-size line" in error.message
    assert reads * 512 <= MAX_FRAMING + 512 and conn.transport.aborted and conn.state is CLOSED


def test_what_one_read_brought_goes_to_the_sink_as_one_piece():
    events = b"".join(b"%x\r\ndata: %d\n\n\r\n" % (len(b"data: %d\n\n" % i), i) for i in range(5))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    sink, conn, _ = run(lambda: exchange([head, events]))
    assert sink.data == [b"".join(b"data: %d\n\n" % i for i in range(5))]
    assert sink.ended == []


def test_bytes_after_the_end_of_the_answer_keep_the_answer_but_not_the_connection():
    sink, conn, pool = run(lambda: exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"]))
    assert b"".join(sink.data) == b"ok" and sink.ended == [None]
    assert pool._kept.idle == [] and conn.transport.closed


def test_http_1_0_answers_are_not_reused_and_complete_ones_are():
    sink, conn, pool = run(lambda: exchange([b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"]))
    assert sink.ended == [None] and pool._kept.idle == [] and conn.transport.closed
    sink, conn, pool = run(lambda: exchange([b"HTTP/1.1 204 No Content\r\n\r\n"]))
    assert sink.status == 204 and sink.data == [] and sink.ended == [None]
    assert pool._kept.idle == [conn] and conn.state is IDLE and conn.reusable


def test_bytes_on_an_idle_connection_drop_it():
    def go():
        sink, conn, pool = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        assert pool._kept.idle == [conn]
        conn.data_received(b"HTTP/1.1 200 OK\r\n")   # nobody asked
        return conn
    conn = run(go)
    assert conn.transport.aborted and not conn.reusable and conn.state is CLOSED


def test_a_sink_that_raises_ends_the_exchange_with_an_upstream_failure():
    class Exploding(Sink):
        def on_data(self, data):
            raise KeyError("a relay bug")

    # data_received must not raise
    sink, conn, _ = run(lambda: exchange([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"],
                                         Exploding()))
    (error,) = sink.ended
    assert isinstance(error, UpstreamFailure) and conn.transport.aborted and conn.state is CLOSED


def test_a_sink_whose_end_raises_does_not_reach_the_event_loop():
    class Exploding(Sink):
        def on_end(self, error):
            super().on_end(error)
            raise RuntimeError("an engine bug")

    def go():
        sink, conn, _ = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart"], Exploding())
        conn.connection_lost(None)     # must not raise
        return sink
    sink = run(go)
    (error,) = sink.ended
    assert isinstance(error, UpstreamFailure) and "mid-stream" in error.message


def test_a_kept_alive_connection_serves_exchange_after_exchange_and_refuses_a_send_mid_exchange():
    """The connection follows the transition table: IDLE -> ... -> IDLE per exchange; a second
    ``send`` while an answer is awaited is a ``ProtocolStateError`` and writes nothing."""
    from fastinfer._core.states import AWAITING_HEAD, ProtocolStateError

    def go():
        sink, conn, pool = exchange([LENGTH])
        states = [conn.state]
        for _ in range(2):      # the pool hands the same connection back for the next exchange
            assert pool._kept.idle == [conn]
            pool._kept.idle.remove(conn)
            again = Sink()
            conn.send(b"GET /again HTTP/1.1\r\n\r\n", again, Timeouts)
            states.append(conn.state)
            written = len(conn.transport.written)
            with pytest.raises(ProtocolStateError):
                conn.send(b"GET /twice HTTP/1.1\r\n\r\n", Sink(), Timeouts)
            assert len(conn.transport.written) == written and conn.state is AWAITING_HEAD
            conn.data_received(LENGTH)
            assert again.status == 400 and again.ended == [None]
            states.append(conn.state)
        return states

    assert run(go) == [IDLE, AWAITING_HEAD, IDLE, AWAITING_HEAD, IDLE]


# ------------------------------------------------------------ an answer that came whole in one read

_FIELDS = st.lists(st.tuples(st.sampled_from(["Content-Type", "content-length", "Connection", "X-Request-Id",
                                              "Server", "Transfer-Encoding", "Date"]),
                             st.sampled_from(["application/json", "2", "close", "keep-alive", " spaced ",
                                              "chunked", "caf\xe9", ""])), max_size=5)


def _outcome(sink: Sink, conn, pool: Pool):
    return (sink.status, sink.headers, b"".join(sink.data), [type(e) for e in sink.ended],
            pool._kept.idle == [conn], conn.state)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([200, 201, 204, 304, 400, 429, 503]), _FIELDS, st.binary(max_size=4), st.booleans())
def test_an_answer_read_whole_ends_as_the_same_answer_fed_to_llhttp_piece_by_piece(status, fields, body, framed):
    if framed:      # half the answers carry their body's own length: most of those are read whole
        fields = [*fields, ("Content-Length", str(len(body)))]
    head = f"HTTP/1.1 {status} Reason\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    response = head.encode("latin-1") + body
    whole = run(lambda: exchange([response]))
    pieces = run(lambda: exchange([response[:1], response[1:]]))    # llhttp alone: the first read is partial
    assert _outcome(*whole) == _outcome(*pieces)


def test_a_plain_answer_in_one_read_leaves_llhttp_untouched_and_the_connection_ready_for_the_next():
    class NoParser:
        def feed_data(self, data):
            raise AssertionError("llhttp was fed a plain answer that came whole")

    def go():
        pool = Pool("http://127.0.0.1:1/v1")
        conn = connection(pool, asyncio.get_running_loop())
        conn.connection_made(FakeTransport())
        llhttp, conn._parser = conn._parser, NoParser()
        first = Sink()
        conn.send(b"POST / HTTP/1.1\r\n\r\n", first, Timeouts)
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        conn._parser = llhttp
        pool._kept.idle.remove(conn)         # as the pool hands it out
        second = Sink()
        conn.send(b"POST / HTTP/1.1\r\n\r\n", second, Timeouts)
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        return first, second, conn
    first, second, conn = run(go)
    assert (first.status, first.headers["content-type"], first.data, first.ended) == (
        200, "application/json", [b"{}"], [None])
    assert (second.status, second.data, second.ended) == (200, [b"hi"], [None]) and conn.reusable


def test_a_sink_that_raises_on_an_answer_read_whole_ends_the_exchange_with_an_upstream_failure():
    class Exploding(Sink):
        def on_data(self, data):
            raise KeyError("a format bug")

    sink, conn, _ = run(lambda: exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], Exploding()))
    (error,) = sink.ended
    assert isinstance(error, UpstreamFailure) and conn.transport.aborted and conn.state is CLOSED


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [200, 429])
def test_an_answer_read_whole_reaches_the_caller_as_the_split_one_does(stream, status):
    """An answer that comes whole in one read is told to the exchange in one call (``on_whole``): its
    reply is the one the head-data-end calls made — a body, or for a 200 to a stream the first bytes
    and an ended stream — and the connection goes back to the pool for the next request."""
    from fastinfer.transport.exchange import exchange as upstream_exchange
    body = b'data: {"id":"x","choices":[]}\n\n' if stream else b'{"id":"x","choices":[]}'
    kind = b"text/event-stream" if stream else b"application/json"
    answer = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status, kind, len(body), body)

    async def go():
        served = []

        async def serve(reader, writer):
            while await reader.readuntil(b"\r\n\r\n"):
                served.append(1)
                writer.write(answer)        # one write: one read on the other side
                await writer.drain()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        pool = Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        replies, ends = [], []
        try:
            for _ in range(2):
                reply = await upstream_exchange(pool, build_request("POST", "/v1/x", pool.host_header, {}, b"{}"),
                                                stream, Timeouts)
                replies.append(reply)
                if reply.stream is not None:
                    chunks = []
                    reply.stream.start(chunks.append, ends.append)
                    replies.append(chunks)
            return replies, ends, len(pool._kept.idle), len(served)
        finally:
            pool.close()
            server.close()
    replies, ends, idle, served = asyncio.run(go())
    assert served == 2 and idle == 1        # the second request reused the first one's connection
    if stream and status == 200:
        first, chunks, second, _ = replies
        assert (first.status, first.first, first.body, chunks) == (200, body, None, [])
        assert first.headers["content-type"] == "text/event-stream" and ends == [None, None]
    else:
        for reply in replies:
            assert (reply.status, reply.body, reply.stream) == (status, body, None)
            assert reply.headers["content-length"] == str(len(body))


@pytest.mark.parametrize("pieces", [1, 2])
def test_a_json_answer_to_a_stream_request_is_read_whole(pieces):
    """A 200 ``application/json`` to a stream request is no stream (an upstream that cannot stream the
    endpoint): read whole, in one read or several, so the engine can fail the attempt before the
    client is answered."""
    body = b'{"id":"x","object":"chat.completion","choices":[]}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body)
    reads = [head + body] if pieces == 1 else [head + body[:9], body[9:]]

    async def go():
        return await _stream_request_answered(reads)
    reply = asyncio.run(go())
    assert (reply.status, reply.body, reply.stream, reply.first) == (200, body, None, None)


async def _stream_request_answered(reads: list[bytes]):
    """The reply to a stream request on a connection that reads ``reads``, once the exchange has one."""
    pool = Pool("http://127.0.0.1:1/v1")
    conn = connection(pool, asyncio.get_running_loop())
    conn.connection_made(FakeTransport())
    sink = Pool.core.Exchange(conn, True)       # a stream asked for
    conn.send(b"POST / HTTP/1.1\r\n\r\n", sink, Timeouts)
    for read in reads:
        conn.data_received(read)
    await sink.ready
    return sink.ready.result() or sink.reply()


@pytest.mark.parametrize("label", ["application/json", "Application/JSON; charset=utf-8"])
def test_an_event_stream_labelled_json_is_relayed_as_a_stream(label):
    """A stream whose upstream (or a proxy) calls it JSON is still a stream: what its body starts with
    decides, so it is relayed (whole, once it has ended), not failed and generated again."""
    body = b'data: {"id":"x","choices":[]}\n\ndata: [DONE]\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (label.encode(), len(body))

    async def go():
        reply = await _stream_request_answered([head + body])
        chunks, ends = [], []
        if reply.stream is not None:
            reply.stream.start(chunks.append, ends.append)
        return reply, chunks, ends
    reply, chunks, ends = asyncio.run(go())
    assert reply.stream is not None and reply.first + b"".join(chunks) == body and ends == [None]


def test_a_request_whose_kept_alive_connection_was_stale_is_sent_once_more_on_a_new_one():
    """The upstream closed its idle connections as they were reused: the request goes once more on a
    new connection, not on the next kept-alive one (which may be as stale), and not a third time."""
    from fastinfer.transport.exchange import exchange as upstream_exchange

    class Answering(FakeTransport):
        """Answers each write, soon, the way ``answer`` says."""

        def __init__(self, conn, answer):
            super().__init__()
            self.conn, self.answer = conn, answer

        def write(self, data):
            super().write(data)
            asyncio.get_running_loop().call_soon(self.answer, self.conn)

    stale = lambda conn: conn.connection_lost(None)   # noqa: E731 (the upstream had closed it)
    whole = lambda conn: conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")  # noqa: E731

    class StalePool:
        def __init__(self, loop):
            self.loop = loop
            self.idle = [self._made(True, stale), self._made(True, stale)]
            self.new = []

        def _made(self, reused, answer):
            conn = connection(self, self.loop)
            conn.connection_made(Answering(conn, answer))
            conn.reused = reused
            return conn

        def kept_alive(self):
            return self.idle.pop() if self.idle else None

        async def connect(self, connect_s):
            conn = self._made(False, whole)
            self.new.append(conn)
            return conn

        def release(self, conn, reusable):
            pass

        def forget(self, conn):
            pass

    async def go():
        pool = StalePool(asyncio.get_running_loop())
        reply = await upstream_exchange(pool, b"POST / HTTP/1.1\r\n\r\n", False, Timeouts)
        for conn in pool.new + pool.idle:
            conn.abort()        # their watchdogs
        return reply, pool
    reply, pool = asyncio.run(go())
    assert (reply.status, reply.body) == (200, b"{}")
    assert len(pool.idle) == 1 and [len(c.transport.written) for c in pool.new] == [1]  # one stale, then a new one


@pytest.mark.parametrize("how", ["ended", "failed"])
def test_a_stream_that_ended_is_freed_without_the_cyclic_gc(how):
    """The stream's consumer holds its reply (so its exchange) and gives the exchange its own bound
    method for the end: once the end is told, the exchange lets the callback go, and the consumer is
    freed by its last reference, not left in a cycle for the collector (a stream's dozen objects,
    every stream)."""
    import gc
    import weakref

    class Consumer:
        def __init__(self, reply):
            self.reply = reply
            self.chunks, self.ends = [], []

        def on_chunk(self, data):
            self.chunks.append(data)

        def on_end(self, error):
            self.ends.append(error)

    def go():
        pool = Pool("http://127.0.0.1:1/v1")
        conn = connection(pool, asyncio.get_running_loop())
        conn.connection_made(FakeTransport())
        ex = Pool.core.Exchange(conn, True)
        conn.send(b"GET / HTTP/1.1\r\n\r\n", ex, Timeouts)
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n")
        assert ex.ready.done()
        consumer = Consumer(ex.reply())
        consumer.reply.stream.start(consumer.on_chunk, consumer.on_end)
        if how == "ended":
            conn.data_received(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        else:
            conn.connection_lost(None)      # cut mid-chunk-stream: an upstream failure
        ended = (consumer.reply.first, consumer.chunks, consumer.ends)
        gone = weakref.ref(consumer)
        del consumer, ex
        return gone, ended

    gc.disable()
    try:
        gone, (first, chunks, ends) = run(go)
        assert gone() is None
    finally:
        gc.enable()
    assert len(ends) == 1
    if how == "ended":
        assert ends == [None] and (first, chunks) == (b"data: a\n\n", [b"data: [DONE]\n\n"])
    else:
        assert isinstance(ends[0], UpstreamFailure)
