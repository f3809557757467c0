"""Micro-benchmark of the OpenAI passthrough relay on a short stream that arrives in one read (a fast
upstream's 64 token events, its usage and its end): the compiled relay against its source run as
Python, and that against decoding every event, in the same run.

Run:  python -m pytest bench/micro/test_bench_relay.py --benchmark-enable -p no:cacheprovider -s

- compiled: ``formats.openai.OpenAIStreamRelay`` (``_core.relay`` compiled) — ``feed`` forwards the
  plain token events before the first marker (usage, the end, an error) as bytes, without
  splitting them into events, and decodes only the events that may need it.
- python: the same ``_core/relay.py`` run as Python (``_core.ref.relay``): what compiling it buys.
- every event decoded: the Python one with no plain prefix and the per-event check answering
  "decode": what a read holding the end cost before the plain prefix.
With ``--benchmark-disable`` (the default in pyproject) the test runs a few feeds, quickly.
"""
from __future__ import annotations

import timeit

import orjson

from fastinfer._core.ref import relay as reference
from fastinfer.formats import openai

TOKEN = orjson.dumps({"id": "chatcmpl-9xQ7bK2mLp4", "object": "chat.completion.chunk", "created": 1700000000,
                      "model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "delta": {"content": " token"},
                                                                 "logprobs": None, "finish_reason": None}],
                      "usage": None})
USAGE = orjson.dumps({"id": "chatcmpl-9xQ7bK2mLp4", "object": "chat.completion.chunk", "choices": [],
                      "usage": {"prompt_tokens": 12, "completion_tokens": 64, "total_tokens": 76}})
STREAM = b"".join(b"data: %s\n\n" % e for e in [TOKEN] * 64 + [USAGE, b"[DONE]"])


def _relay_once() -> bytes:
    return openai.OpenAIStreamRelay(client_wants_usage=False).feed(STREAM)


def _python_relay_once() -> bytes:
    return reference.OpenAIPassthrough(False).feed(STREAM)


def _best_us(run, number: int) -> float:
    return min(timeit.repeat(run, number=number, repeat=3)) / number * 1e6


def test_relay_of_a_stream_in_one_read_compiled_against_python_and_decoding_every_event(benchmark, monkeypatch):
    number = 20 if benchmark.disabled else 2_000
    compiled_us = python_us = every_us = float("inf")
    for _ in range(3):      # alternated, the best of each: the machine's other load falls on all three
        compiled_us = min(compiled_us, _best_us(_relay_once, number))
        python_us = min(python_us, _best_us(_python_relay_once, number))
        with monkeypatch.context() as before:
            before.setattr(reference._module, "plain_prefix", lambda events, markers: (0, 0))
            before.setattr(reference._module, "needs_parsing", lambda data: True)
            every = _python_relay_once()
            every_us = min(every_us, _best_us(_python_relay_once, number))
    assert _relay_once() == _python_relay_once() == every     # the same bytes every way
    benchmark.extra_info.update({"compiled_us": round(compiled_us, 2), "python_us": round(python_us, 2),
                                 "every_event_us": round(every_us, 2),
                                 "compiled_over_python": round(compiled_us / python_us, 3),
                                 "python_over_every_event": round(python_us / every_us, 3)})
    print(f"\nOpenAI relay, 64 events + usage + end in one read: compiled {compiled_us:.2f} us, as Python "
          f"{python_us:.2f} us (compiled/python = {compiled_us / python_us:.2f}); every event decoded "
          f"{every_us:.2f} us (python/every = {python_us / every_us:.2f})")
    benchmark(_relay_once)
