"""Micro-benchmarks of the passthrough relays on a short stream that arrives in one read (a fast
upstream's 64 token events, its usage and its end), each against decoding every event, in the same run.

OpenAI: the compiled relay against its source run as Python, and that against decoding every event.
Anthropic: the relay (plain runs between the start, the usage and the end forwarded unparsed) against
parsing and decoding every event of the read, as it did before.

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
from fastinfer._core.sse import whole_events
from fastinfer.formats import anthropic, openai

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


def _anthropic_event(name: str, payload: dict) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(payload))


ANTHROPIC_STREAM = b"".join([
    _anthropic_event("message_start", {"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    _anthropic_event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}}),
    _anthropic_event("ping", {"type": "ping"}),
    *[_anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": " token"}})] * 64,
    _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _anthropic_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                          "stop_sequence": None},
                                       "usage": {"output_tokens": 64}}),
    _anthropic_event("message_stop", {"type": "message_stop"}),
])
_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}


def _anthropic_relay_once() -> bytes:
    return anthropic.AnthropicStreamRelay(_BODY).feed(ANTHROPIC_STREAM)


def _anthropic_every_event_once() -> bytes:
    """The read as the relay took it before: split into events, every one decoded."""
    relay = anthropic.AnthropicStreamRelay(_BODY)
    out, _ = whole_events(b"", ANTHROPIC_STREAM)
    kept = relay._attend(relay._parser.feed(out))
    return out if kept is None else b"".join(kept)


def test_anthropic_relay_of_a_stream_in_one_read_against_decoding_every_event(benchmark):
    number = 20 if benchmark.disabled else 2_000
    relay_us = every_us = float("inf")
    for _ in range(3):      # alternated, the best of each
        relay_us = min(relay_us, _best_us(_anthropic_relay_once, number))
        every_us = min(every_us, _best_us(_anthropic_every_event_once, number))
    assert _anthropic_relay_once() == _anthropic_every_event_once() == ANTHROPIC_STREAM
    benchmark.extra_info.update({"relay_us": round(relay_us, 2), "every_event_us": round(every_us, 2),
                                 "relay_over_every_event": round(relay_us / every_us, 3)})
    print(f"\nAnthropic relay, start + 64 deltas + usage + end in one read: {relay_us:.2f} us; every event "
          f"decoded {every_us:.2f} us (relay/every = {relay_us / every_us:.2f})")
    benchmark(_anthropic_relay_once)
