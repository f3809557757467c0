"""Micro-benchmark of reading a data request's head: the compiled scanner (``_core.heads.plain_post``)
against llhttp through httptools with a Python callback per field (``DirectConnection._read_head``,
the way every head was read before, and still the way for a head outside the scanner's subset), and
against the scanner's pure-Python reference, measured in the same run.

Run:  python -m pytest bench/micro/test_bench_heads.py --benchmark-enable -p no:cacheprovider -s

The head is what the OpenAI Python SDK sends for a chat completion (its fields, in its order).
With ``--benchmark-disable`` (the default in pyproject) every test runs once, quickly.
"""
from __future__ import annotations

import timeit

from fastinfer._core import heads
from fastinfer._core.ref import heads as reference
from fastinfer.gateway.connection import DirectConnection

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
    llhttp = DirectConnection._read_head(HEAD)
    assert compiled == reference.plain_post(HEAD, length)
    assert compiled[0] == llhttp[0] and compiled[1] == llhttp[1] and compiled[2:] == llhttp[2:]
    number = 500 if benchmark.disabled else 50_000
    compiled_us = _us(lambda: heads.plain_post(HEAD, length), number)
    llhttp_us = _us(lambda: DirectConnection._read_head(HEAD), number)
    reference_us = _us(lambda: reference.plain_post(HEAD, length), max(number // 10, 50))
    benchmark.extra_info.update({"compiled_us": round(compiled_us, 3), "llhttp_us": round(llhttp_us, 3),
                                 "reference_us": round(reference_us, 3),
                                 "compiled_over_llhttp": round(compiled_us / llhttp_us, 3),
                                 "compiled_over_reference": round(compiled_us / reference_us, 3)})
    print(f"\nrequest head ({len(HEAD)} bytes, 13 fields): compiled {compiled_us:.3f} us; llhttp with callbacks "
          f"{llhttp_us:.3f} us (compiled/llhttp = {compiled_us / llhttp_us:.2f}); pure-Python reference "
          f"{reference_us:.3f} us (compiled/reference = {compiled_us / reference_us:.3f})")
    benchmark(heads.plain_post, HEAD, length)
