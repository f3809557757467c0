"""Micro-benchmarks of reading heads, each against the way before, measured in the same run:

- a data request's head: the compiled scanner (``_core.heads.plain_post``) against llhttp through
  httptools with a Python callback per field (``DirectConnection.read_head``, still the way for a
  head outside the scanner's subset), and against the scanner's pure-Python reference;
- an upstream exchange whose answer comes whole in one read (``H1Connection``: send, read, the
  sink's calls, back to the pool): read by ``_core.heads.whole_response`` against llhttp alone;
- a streamed exchange (a chunked answer of 64 events), its chunks one read each as a model server
  sends them, and all in one read: read by ``chunked_head`` and a ``ChunkedBody`` against llhttp
  alone (a Python callback per chunk);
- a JSON answer's head with a features-on answer's ten fields (``gateway.answer._head_bytes``, which
  calls ``_core.heads.answer_head``) against the way it was built before (a ``str.join`` of the
  fields, a ``bytes.translate`` count of the control characters, the tail formatted per answer).

Run:  python -m pytest bench/micro/test_bench_heads.py --benchmark-enable -p no:cacheprovider -s

The head is what the OpenAI Python SDK sends for a chat completion (its fields, in its order).
With ``--benchmark-disable`` (the default in pyproject) every test runs once, quickly.
"""
from __future__ import annotations

import timeit

from fastinfer._core import heads
from fastinfer._core.ref import heads as reference
from fastinfer._core.client import DirectConnection

HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
        b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
        b"User-Agent: OpenAI/Python 1.54.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.0\r\n"
        b"X-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.11.7\r\n"
        b"Authorization: Bearer sk-fastinfer-0123456789abcdef\r\nX-Stainless-Retry-Count: 0\r\n"
        b"Content-Length: 96\r\n\r\n")


def _us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def test_plain_head_against_llhttp_and_the_reference(benchmark):
    length = len(HEAD)
    compiled = heads.plain_post(HEAD, length)
    llhttp = DirectConnection.read_head(HEAD)
    assert compiled == reference.plain_post(HEAD, length)
    assert compiled[0] == llhttp[0] and compiled[1] == llhttp[1] and compiled[2:] == llhttp[2:]
    number = 500 if benchmark.disabled else 50_000
    compiled_us = _us(lambda: heads.plain_post(HEAD, length), number)
    llhttp_us = _us(lambda: DirectConnection.read_head(HEAD), number)
    reference_us = _us(lambda: reference.plain_post(HEAD, length), max(number // 10, 50))
    benchmark.extra_info.update({"compiled_us": round(compiled_us, 3), "llhttp_us": round(llhttp_us, 3),
                                 "reference_us": round(reference_us, 3),
                                 "compiled_over_llhttp": round(compiled_us / llhttp_us, 3),
                                 "compiled_over_reference": round(compiled_us / reference_us, 3)})
    print(f"\nrequest head ({len(HEAD)} bytes, 13 fields): compiled {compiled_us:.3f} us; llhttp with callbacks "
          f"{llhttp_us:.3f} us (compiled/llhttp = {compiled_us / llhttp_us:.2f}); pure-Python reference "
          f"{reference_us:.3f} us (compiled/reference = {compiled_us / reference_us:.3f})")
    benchmark(heads.plain_post, HEAD, length)


ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
          b"Content-Type: application/json\r\nContent-Length: 240\r\nConnection: keep-alive\r\n"
          b"x-request-id: 0f3a9c1b2d4e5f60a7b8\r\n\r\n" + b"x" * 240)


def _exchanges_us(monkeypatch, compiled: bool, number: int, reads: list[bytes] = (ANSWER,)) -> float:
    """One upstream exchange on a kept-alive ``H1Connection`` (send, the answer in ``reads``, the
    sink's calls, back to the pool): with the compiled readers, or with llhttp alone."""
    import asyncio

    from fastinfer._core import upstream
    from fastinfer.transport.h1 import Sink as SinkBase
    from fastinfer.transport.pool import Pool

    class Transport:
        def write(self, data):
            pass

        def is_closing(self):
            return False

    class Sink(SinkBase):
        def on_head(self, status, headers):
            pass

        def on_data(self, data):
            pass

        def on_end(self, error):
            assert error is None

    class Timeouts:
        connect_s = first_byte_s = idle_s = total_s = 30.0

    async def go():
        pool = Pool("http://127.0.0.1:1/v1")
        conn = upstream.H1Connection(pool, asyncio.get_running_loop())
        conn.connection_made(Transport())
        sink = Sink()

        def one():
            conn.send(b"POST / HTTP/1.1\r\n\r\n", sink, Timeouts)
            for data in reads:
                conn.data_received(data)
            assert pool._kept.idle == [conn]
            pool._kept.idle.clear()
        with monkeypatch.context() as patch:
            if not compiled:
                patch.setattr(upstream, "whole_response", lambda data: None)
                patch.setattr(upstream, "chunked_head", lambda data: None)
            return _us(one, number)
    return asyncio.run(go())


def test_a_whole_answer_against_llhttp_with_callbacks(benchmark, monkeypatch):
    number = 500 if benchmark.disabled else 50_000
    whole_us = llhttp_us = float("inf")
    for _ in range(3):      # alternated, the best of each
        whole_us = min(whole_us, _exchanges_us(monkeypatch, True, number))
        llhttp_us = min(llhttp_us, _exchanges_us(monkeypatch, False, number))
    benchmark.extra_info.update({"whole_response_us": round(whole_us, 3), "llhttp_us": round(llhttp_us, 3),
                                 "whole_over_llhttp": round(whole_us / llhttp_us, 3)})
    print(f"\nan upstream exchange, the answer ({len(ANSWER)} bytes, 6 fields) in one read: read whole "
          f"{whole_us:.3f} us; by llhttp with callbacks {llhttp_us:.3f} us (whole/llhttp = {whole_us / llhttp_us:.2f})")
    benchmark(heads.whole_response, ANSWER)


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\nserver: uvicorn\r\n"
               b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n")
STREAM_EVENTS = [b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
                 b'"choices":[{"index":0,"delta":{"content":"token %d"},"finish_reason":null}]}\n\n' % i
                 for i in range(63)] + [b"data: [DONE]\n\n"]
STREAM_CHUNKS = [b"%x\r\n%b\r\n" % (len(event), event) for event in STREAM_EVENTS] + [b"0\r\n\r\n"]


def test_a_stream_against_llhttp_with_callbacks(benchmark, monkeypatch):
    """64 events: a chunk a read (the head with the first), and all of them in one read."""
    number = 20 if benchmark.disabled else 2_000
    shapes = {"a chunk a read": [STREAM_HEAD + STREAM_CHUNKS[0], *STREAM_CHUNKS[1:-2],
                                 STREAM_CHUNKS[-2] + STREAM_CHUNKS[-1]],
              "one read": [STREAM_HEAD + b"".join(STREAM_CHUNKS)]}
    for shape, reads in shapes.items():
        compiled_us = llhttp_us = float("inf")
        for _ in range(3):      # alternated, the best of each
            compiled_us = min(compiled_us, _exchanges_us(monkeypatch, True, number, reads))
            llhttp_us = min(llhttp_us, _exchanges_us(monkeypatch, False, number, reads))
        key = shape.replace(" ", "_")
        benchmark.extra_info.update({f"{key}_compiled_us": round(compiled_us, 3), f"{key}_llhttp_us": round(llhttp_us, 3),
                                     f"{key}_compiled_over_llhttp": round(compiled_us / llhttp_us, 3)})
        print(f"\na streamed exchange of {len(STREAM_EVENTS)} events, {shape} ({len(reads)} reads): compiled "
              f"{compiled_us:.3f} us; llhttp with callbacks {llhttp_us:.3f} us "
              f"(compiled/llhttp = {compiled_us / llhttp_us:.2f})")
    body = b"".join(STREAM_CHUNKS)
    benchmark(lambda: heads.ChunkedBody().feed(body))


# a features-on answer's fields: the gateway's four and a key's and a deployment's x-ratelimit-*
ANSWER_FIELDS = {"x-request-id": "0f3a9c1b2d4e5f60a7b8", "x-fastinfer-replica": "bench-0",
                 "x-fastinfer-attempts": "1", "x-fastinfer-overhead-ms": "0.123",
                 "x-ratelimit-limit-requests": "1000000000", "x-ratelimit-remaining-requests": "1000000000",
                 "x-ratelimit-reset-requests": "0s", "x-ratelimit-limit-tokens": "1000000000",
                 "x-ratelimit-remaining-tokens": "1000000000", "x-ratelimit-reset-tokens": "0s"}
_CONTROL = bytes(range(0x00, 0x09)) + bytes(range(0x0a, 0x20)) + b"\x7f"


def _former_head_bytes(status: int, headers, tail: bytes, length: int | None, keep_alive: bool) -> bytes:
    """``answer._head_bytes`` as it was before ``answer_head`` (its tail then ended with ``Date: ``)."""
    from aiohttp.helpers import rfc822_formatted_time

    from fastinfer.gateway.answer import _STATUS_LINES
    line = _STATUS_LINES[status]
    fields = ("\r\n".join(map(": ".join, headers.items())) + "\r\n").encode() if headers else b""
    if len(fields) - len(fields.translate(None, _CONTROL)) != 2 * len(headers):
        raise ValueError("Forbidden control character in an answer's headers")
    length_field = "" if length is None else f"Content-Length: {length}\r\n"
    connection = "" if keep_alive else "Connection: close\r\n"
    return b"%s%s%s" % (line, fields,
                        f"{tail.decode()}Date: {rfc822_formatted_time()}\r\n{length_field}{connection}\r\n".encode())


def test_an_answer_head_against_the_join_it_replaced(benchmark):
    from fastinfer.gateway.answer import _JSON_TAIL, _head_bytes
    for keep_alive in (True, False):
        assert _head_bytes(200, ANSWER_FIELDS, _JSON_TAIL, 240, keep_alive) == _former_head_bytes(
            200, ANSWER_FIELDS, _JSON_TAIL, 240, keep_alive)
    number = 500 if benchmark.disabled else 100_000
    new_us = old_us = float("inf")
    for _ in range(3):      # alternated, the best of each
        new_us = min(new_us, _us(lambda: _head_bytes(200, ANSWER_FIELDS, _JSON_TAIL, 240, True), number))
        old_us = min(old_us, _us(lambda: _former_head_bytes(200, ANSWER_FIELDS, _JSON_TAIL, 240, True), number))
    benchmark.extra_info.update({"answer_head_us": round(new_us, 3), "former_us": round(old_us, 3),
                                 "new_over_former": round(new_us / old_us, 3)})
    print(f"\nan answer's head with {len(ANSWER_FIELDS)} fields: {new_us:.3f} us; the former join "
          f"{old_us:.3f} us (new/former = {new_us / old_us:.2f})")
    benchmark(_head_bytes, 200, ANSWER_FIELDS, _JSON_TAIL, 240, True)
