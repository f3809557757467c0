"""Micro-benchmark of the gateway's body checks, against parsing the same body.

Owns: what checking a client body costs per request — the field walk
(``gateway.openai_api.chat_request``, ``gateway.anthropic_api.messages_request``) and
the JSON depth check on the bytes (``gateway.body.json_depth_exceeds``) — set against
``orjson.loads`` of the same bytes, measured in the same run, for a small chat body and a
long, tool-heavy one; and reading a whole upstream reply's usage (``_core.bodies.openai_reply_usage``,
its scan) against parsing the reply. Reports the ratio (printed, and in ``benchmark.extra_info``).
No wall-clock assertions: only that the bodies pass.

Must not touch: HTTP, the engine.

Run: ``pytest bench/micro/test_bench_validate.py --benchmark-enable -s``
"""
from __future__ import annotations

import copy
import timeit

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


def _chat_shape_of(shapes) -> object:
    """``openai_api.CHAT`` built from ``shapes``' classes: the module's source run again with them."""
    import importlib.util

    from fastinfer.gateway import openai_api, validate
    names = ("Arr", "Bool", "Int", "Num", "Obj", "OneOf", "Str", "Tagged")
    saved = {name: getattr(validate, name) for name in names + ("ANY_OBJECT",)}
    try:
        for name in names:
            setattr(validate, name, getattr(shapes, name))
        validate.ANY_OBJECT = shapes.Obj()
        spec = importlib.util.spec_from_file_location("fastinfer.gateway._openai_api_again", openai_api.__file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.CHAT
    finally:
        for name, value in saved.items():
            setattr(validate, name, value)


def _compiled_against_reference(benchmark, what: str, compiled, reference, number: int, **info) -> None:
    """``compiled()`` and ``reference()`` timed in this run (the best of five), their ratio printed and
    kept in ``benchmark.extra_info``; then ``compiled`` benchmarked."""
    compiled_us = min(timeit.repeat(compiled, number=number, repeat=5)) / number * 1e6
    reference_us = min(timeit.repeat(reference, number=number, repeat=5)) / number * 1e6
    benchmark.extra_info.update({**info, "compiled_us": round(compiled_us, 3), "reference_us": round(reference_us, 3),
                                 "compiled_over_reference": round(compiled_us / reference_us, 3)})
    print(f"\n{what}: compiled {compiled_us:.3f} us, the pure-Python reference {reference_us:.3f} us "
          f"(compiled/reference = {compiled_us / reference_us:.3f})")
    benchmark(compiled)


@pytest.mark.parametrize("name", ["openai small", "openai long"])
def test_bench_compiled_walk_against_the_reference(benchmark, name):
    """The walk alone (``CHAT.check``), compiled (``_core.shapes``) against its pure-Python twin, same run."""
    from fastinfer._core import shapes
    from fastinfer._core.ref import shapes as reference
    _, body = BODIES[name]
    compiled_chat, reference_chat = _chat_shape_of(shapes), _chat_shape_of(reference)
    assert type(compiled_chat) is shapes.Obj and type(reference_chat) is reference.Obj
    compiled_chat.check(body)
    reference_chat.check(body)
    number = 20 if benchmark.disabled else (20_000 if name.endswith("small") else 1_000)
    _compiled_against_reference(benchmark, f"{name}: the walk", lambda: compiled_chat.check(body),
                                lambda: reference_chat.check(body), number)


_PROMPT = 'a prompt with "quoted" words and [brackets] in it, as prompts have. '
DEPTH_BODIES = {
    "openai small": orjson.dumps(BODIES["openai small"][1]),
    "openai long": orjson.dumps(BODIES["openai long"][1]),
    "prompt 4 KiB": orjson.dumps({"model": "m", "messages": [{"role": "user", "content": _PROMPT * 60}]}),
    "prompt 128 KiB": orjson.dumps({"model": "m", "messages": [{"role": "user", "content": _PROMPT * 1900}]}),
}


@pytest.mark.parametrize("name", DEPTH_BODIES)
def test_bench_depth_check_compiled_against_the_reference(benchmark, name):
    """The JSON depth check of a client body: one compiled pass (``_core.bodies``) against the
    reference's bytes methods (``_core/ref/bodies.py``, what ran before), same run."""
    from fastinfer._core import bodies
    from fastinfer._core.ref import bodies as reference
    raw = DEPTH_BODIES[name]
    assert bodies.json_depth_exceeds(raw, MAX_JSON_DEPTH) is reference.json_depth_exceeds(raw, MAX_JSON_DEPTH) is False
    number = 20 if benchmark.disabled else max(200, 2_000_000 // len(raw))
    _compiled_against_reference(benchmark, f"{name} ({len(raw)} bytes): the depth check",
                                lambda: bodies.json_depth_exceeds(raw, MAX_JSON_DEPTH),
                                lambda: reference.json_depth_exceeds(raw, MAX_JSON_DEPTH), number, bytes=len(raw))


WALKED_BODIES = {
    "openai long": BODIES["openai long"][1],
    "anthropic blocks": {"model": "claude", "max_tokens": 256, "system": [{"type": "text", "text": "be brief"}],
                         "messages": [{"role": "user", "content": [{"type": "text", "text": _PROMPT * 4}]},
                                      {"role": "assistant", "content": [{"type": "text", "text": "sure"}]}] * 8},
}


@pytest.mark.parametrize("name", WALKED_BODIES)
def test_bench_prompt_walk_compiled_against_the_reference(benchmark, name):
    """The prompt count of a body outside the quick count's shape (content parts, blocks): the compiled
    walk (``_core.bodies.walked_chars``) against the reference's (what ran before), same run."""
    from fastinfer._core import bodies
    from fastinfer._core.ref import bodies as reference
    body = WALKED_BODIES[name]
    assert bodies.chat_chars(body) == -1 and bodies.walked_chars(body) == reference.walked_chars(body) > 0
    number = 20 if benchmark.disabled else 5_000
    _compiled_against_reference(benchmark, f"{name}: the prompt walk", lambda: bodies.walked_chars(body),
                                lambda: reference.walked_chars(body), number)


_REPLY = {"id": "chatcmpl-9xQ7bK2mLp4", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-2024-08-06",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
                       "logprobs": None, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 19, "completion_tokens": 57, "total_tokens": 76,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
          "service_tier": "default", "system_fingerprint": "fp_f33667828e"}
REPLIES = {
    "reply small": orjson.dumps({**_REPLY, "choices": [{**_REPLY["choices"][0], "message": {
        "role": "assistant", "content": "Paris is the capital of France."}}]}),
    "reply 2 KiB": orjson.dumps({**_REPLY, "choices": [{**_REPLY["choices"][0], "message": {
        "role": "assistant", "content": "A sentence of an answer, with \"quotes\" and a newline.\n" * 36}}]}),
}


@pytest.mark.parametrize("name", REPLIES)
def test_bench_reply_usage_scanned_against_parsed(benchmark, name):
    """A whole OpenAI reply's usage (``_core.bodies.openai_reply_usage``): scanned, its usage alone
    parsed, against the whole reply parsed by orjson and its usage read (what ran before), same run."""
    from fastinfer._core import bodies
    body = REPLIES[name]
    assert bodies.reply_usage_span(body) is not None        # the scan is sure of it: the fast way is measured

    def parsed():
        reply = orjson.loads(body)
        return bodies.openai_usage(reply.get("usage"))

    def scanned():
        return bodies.openai_reply_usage(body)

    assert scanned() == parsed()
    number = 20 if benchmark.disabled else 50_000
    scanned_us = parsed_us = float("inf")
    for _ in range(3):      # alternated, the best of each
        scanned_us = min(scanned_us, min(timeit.repeat(scanned, number=number, repeat=3)) / number * 1e6)
        parsed_us = min(parsed_us, min(timeit.repeat(parsed, number=number, repeat=3)) / number * 1e6)
    benchmark.extra_info.update({"bytes": len(body), "scanned_us": round(scanned_us, 3),
                                 "parsed_us": round(parsed_us, 3), "scanned_over_parsed": round(scanned_us / parsed_us, 3)})
    print(f"\n{name} ({len(body)} bytes): usage scanned {scanned_us:.3f} us, the reply parsed {parsed_us:.3f} us "
          f"(scanned/parsed = {scanned_us / parsed_us:.3f})")
    benchmark(scanned)
