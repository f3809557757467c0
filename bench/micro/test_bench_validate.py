"""Micro-benchmark of the gateway's body checks, against parsing the same body.

Owns: what checking a client body costs per request — the field walk
(``gateway.openai_api.chat_request``, ``gateway.anthropic_api.messages_request``) and
the JSON depth check on the bytes (``gateway.body.json_depth_exceeds``) — set against
``orjson.loads`` of the same bytes, measured in the same run, for a small chat body and a
long, tool-heavy one. Reports the ratio (printed, and in ``benchmark.extra_info``).
No wall-clock assertions: only that the bodies pass.

Must not touch: HTTP, the engine.

Run: ``pytest bench/micro/test_bench_validate.py --benchmark-enable -s``
"""
from __future__ import annotations

import copy

import orjson
import pytest

from fastinfer.gateway.anthropic_api import messages_request
from fastinfer.gateway.body import MAX_JSON_DEPTH, json_depth_exceeds
from fastinfer.gateway.openai_api import chat_request

_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"]}}}
_TURN = [
    {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris? " * 4},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, clear"},
    {"role": "assistant", "content": "It is 18 C and clear in Paris."},
]
BODIES = {
    "openai small": (chat_request, {"model": "gpt-4o", "stream": True, "max_tokens": 256, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]}),
    "openai long": (chat_request, {"model": "gpt-4o", "temperature": 0.2, "tools": [_TOOL] * 8,
                                   "tool_choice": "auto", "messages": [{"role": "system", "content": "s"}] + _TURN * 10}),
    "anthropic small": (messages_request, {"model": "claude", "max_tokens": 256, "system": "be brief",
                                           "messages": [{"role": "user", "content": "hello there"}]}),
}
_RESULTS: dict[str, dict[str, float]] = {}


@pytest.mark.parametrize("name", BODIES)
@pytest.mark.parametrize("what", ["parse", "check"])
def test_bench_body_checks(benchmark, name, what):
    check, body = BODIES[name]
    raw = orjson.dumps(body)
    if what == "parse":
        benchmark(orjson.loads, raw)
    else:
        bodies = [copy.deepcopy(body) for _ in range(64)]   # the check pops fields: a fresh body each round
        rounds = iter(range(1 << 30))

        def checked():
            assert not json_depth_exceeds(raw, MAX_JSON_DEPTH)
            return check(bodies[next(rounds) % 64], {}, "req", 0.0)

        assert checked().model == body["model"]
        benchmark(checked)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _RESULTS.setdefault(name, {})[what] = stats.stats.median
        pair = _RESULTS[name]
        if {"parse", "check"} <= set(pair):
            ratio = pair["check"] / pair["parse"]
            benchmark.extra_info["check_over_parse"] = ratio
            print(f"\n{name}: {len(raw)} bytes, parse {pair['parse'] * 1e6:.2f} us, "
                  f"check {pair['check'] * 1e6:.2f} us = x{ratio:.2f} of the parse")
