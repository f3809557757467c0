"""Stream relays over real SSE bytes: every (upstream, caller) pair, fed whole and re-chunked.

A relay must produce the same events however the upstream's bytes are split,
hand out only whole events, end the caller's stream only when the upstream
ended properly, and report usage (estimated when the upstream sent none).
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import orjson
import pytest

from fastinfer._core.sse import SSEParser
from fastinfer.errors import UpstreamFailure
from fastinfer.formats import FORMATS

BODY = {"messages": [{"role": "user", "content": "x" * 40}]}   # ~10 prompt tokens when estimated


def req(api: str, usage: bool = False):
    return SimpleNamespace(api=api, body=BODY, client_wants_usage=usage, model="dep", endpoint="chat")


def make_relay(wire: str, request, model: str):
    """The relay from an upstream speaking ``wire`` to ``request``'s caller."""
    return FORMATS[wire].relay(request, FORMATS[request.api], model)


def convert_reply(wire: str, body: bytes, request, model: str) -> bytes:
    return FORMATS[wire].reply(body, request, FORMATS[request.api], model)[0]


def reply_usage(wire: str, body: bytes, request) -> dict:
    return FORMATS[wire].reply(body, request, FORMATS[request.api], "m")[1]


def sse(*events, crlf: bool = False) -> bytes:
    end = b"\r\n\r\n" if crlf else b"\n\n"
    out = b""
    for e in events:
        name, data = e if isinstance(e, tuple) else (None, e)
        head = b"event: " + name.encode() + b"\n" if name else b""
        out += head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + end
    return out


OPENAI_STREAM = sse(
    {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Bonjour "}, "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "à tous"}, "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"q":'}}]},
        "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "é"}'}}]},
                              "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                                          "prompt_tokens_details": {"cached_tokens": 4}}},
    b"[DONE]")

ANTHROPIC_STREAM = sse(
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "c", "content": [],
                                                            "usage": {"input_tokens": 8, "cache_read_input_tokens": 4,
                                                                      "output_tokens": 1}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Bonjour "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "à tous"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
    ("message_stop", {"type": "message_stop"}))

GEMINI_STREAM = sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Bonjour "}]}, "index": 0}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "à tous"}]}, "index": 0, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17}},
    crlf=True)

STREAMS = {"openai": OPENAI_STREAM, "anthropic": ANTHROPIC_STREAM, "gemini": GEMINI_STREAM}
PAIRS = [(w, a) for w in STREAMS for a in ("openai", "anthropic")]


def events_of(out: bytes) -> list[tuple[str, object]]:
    """Parsed output events, without the ids and timestamps that differ between relays."""
    result = []
    for e in SSEParser().feed(out):
        data = e.data if e.data == b"[DONE]" else orjson.loads(e.data)
        if isinstance(data, dict):
            data.pop("id", None)
            data.pop("created", None)
            (data.get("message") or {}).pop("id", None)
            if (data.get("content_block") or {}).get("type") == "tool_use":
                data["content_block"].pop("id", None)
        result.append((e.event, data))
    return result


def feed(relay, raw: bytes, size: int) -> list[bytes]:
    return [relay.feed(raw[i:i + size]) for i in range(0, len(raw), size)]


@pytest.mark.parametrize("wire, api", PAIRS)
def test_rechunked_streams_translate_identically(wire, api):
    raw = STREAMS[wire]
    whole = make_relay(wire, req(api, usage=True), "up-model")
    reference = whole.feed(raw)
    assert whole.finished and whole.error is None
    for size in (1, 2, 3, 7, 64):
        relay = make_relay(wire, req(api, usage=True), "up-model")
        pieces = feed(relay, raw, size)
        assert all(p == b"" or p.endswith(b"\n\n") for p in pieces), "only whole events go out"
        assert events_of(b"".join(pieces)) == events_of(reference)
        assert relay.finished
        assert relay.usage == whole.usage


@pytest.mark.parametrize("wire, api", PAIRS)
def test_text_and_terminator_in_callers_format(wire, api):
    relay = make_relay(wire, req(api), "up-model")
    events = events_of(relay.feed(STREAMS[wire]))
    if api == "openai":
        text = "".join((d["choices"][0]["delta"].get("content") or "") for _, d in events
                       if isinstance(d, dict) and d.get("choices"))
        assert events[-1] == ("message", b"[DONE]")
    else:
        text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
        assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
        assert events[0][0] == "message_start"
    assert text == "Bonjour à tous"
    assert relay.usage["prompt_tokens"] == 12 and relay.usage["completion_tokens"] == 5
    assert not relay.usage.get("usage_estimated")


def test_same_format_streams_pass_through_as_bytes():
    for wire in ("openai", "anthropic"):
        relay = make_relay(wire, req(wire, usage=True), "m")
        assert b"".join(feed(relay, STREAMS[wire], 5)) == STREAMS[wire]
        assert relay.finished
    relay = make_relay("anthropic", req("anthropic"), "m")
    relay.feed(ANTHROPIC_STREAM)
    assert relay.usage == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "cached_tokens": 4}


def test_openai_usage_chunk_dropped_when_client_did_not_ask_and_normalized():
    relay = make_relay("openai", req("openai", usage=False), "m")
    out = relay.feed(OPENAI_STREAM)
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert relay.usage == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "cached_tokens": 4}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_cut_stream_is_not_finished_and_ends_with_callers_error_event(api):
    relay = make_relay("gemini", req(api), "m")
    out = relay.feed(GEMINI_STREAM[:GEMINI_STREAM.index(b"\r\n\r\n") + 4])
    assert out and not relay.finished
    end = events_of(relay.error_event(UpstreamFailure("upstream closed the connection mid-stream")))
    if api == "anthropic":
        assert end == [("error", {"type": "error", "error": {"type": "api_error",
                                                             "message": "upstream closed the connection mid-stream"}})]
        assert b"message_stop" not in out
    else:
        assert end[0][1]["error"]["code"] == "upstream_error" and b"[DONE]" not in out
    assert relay.usage["usage_estimated"] and relay.usage["prompt_tokens"] == 10


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_upstream_in_stream_error_and_garbage_stop_the_stream(api):
    relay = make_relay("anthropic", req(api), "m")
    start = ANTHROPIC_STREAM[:ANTHROPIC_STREAM.index(b"event: ping")]
    err = sse(("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    out = relay.feed(start + err)
    assert relay.error is not None and not relay.finished
    last = events_of(out)[-1]
    assert relay.error and "Overloaded" in json.dumps(last[1])
    assert (b"event: error\n" in out) == (api == "anthropic")
    if api == "openai":
        assert relay.feed(ANTHROPIC_STREAM) == b""   # a translated stream sends nothing after an error


OPENAI_START = sse({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                             "finish_reason": None}]})


@pytest.mark.parametrize("wire, start, error", [
    # vLLM and other OpenAI-compatible servers: an SSE ``event: error`` whose data is OpenAI's error body
    ("openai", OPENAI_START, ("error", {"error": {"message": "model overloaded", "type": "server_error"}})),
    ("openai", OPENAI_START, {"error": {"message": "model overloaded", "type": "server_error"}}),
    ("openai", OPENAI_START, ("error", {"message": "model overloaded", "type": "server_error"})),
    ("anthropic", ANTHROPIC_STREAM[:ANTHROPIC_STREAM.index(b"event: ping")],
     ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "model overloaded"}})),
    ("gemini", GEMINI_STREAM[:GEMINI_STREAM.index(b"\r\n\r\n") + 4],
     {"error": {"code": 503, "message": "model overloaded", "status": "UNAVAILABLE"}}),
], ids=["openai-event-error-body", "openai-data-error-body", "openai-event-error-object", "anthropic", "gemini"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_an_upstream_error_event_of_any_shape_reaches_the_caller_as_its_error_event(wire, start, error, api):
    """Whatever API shaped the upstream's error (and whether it came as ``event: error`` or a data
    line), the caller gets its own error event with the upstream's message, and the stream ends."""
    if wire == "openai" and api == "openai":
        return      # the passthrough sends the upstream's event as it came (tests/test_openai_relay.py)
    relay = make_relay(wire, req(api), "m")
    out = relay.feed(start + sse(error))
    assert relay.error is not None and not relay.finished and relay.failure is None
    name, last = events_of(out)[-1]
    assert (name == "error") == (api == "anthropic")
    assert last["error"]["message"] == "model overloaded", last
    assert relay.feed(STREAMS[wire]) == b""


def test_a_parameterless_tool_call_streams_its_arguments_as_an_empty_object():
    """Anthropic streams a call without parameters with no JSON (or one empty ``partial_json``): to an
    OpenAI caller its arguments are ``"{}"``, as in a whole reply, so ``json.loads`` reads them."""
    def call(index: int, name: str, *parts: str) -> list:
        return [("content_block_start", {"type": "content_block_start", "index": index,
                                         "content_block": {"type": "tool_use", "id": f"t{index}", "name": name,
                                                           "input": {}}}),
                *(("content_block_delta", {"type": "content_block_delta", "index": index,
                                           "delta": {"type": "input_json_delta", "partial_json": p}}) for p in parts),
                ("content_block_stop", {"type": "content_block_stop", "index": index})]
    events = [("message_start", {"type": "message_start", "message": {"id": "m", "model": "c", "content": [],
                                                                      "usage": {"input_tokens": 8}}}),
              *call(0, "now", ""), *call(1, "none"), *call(2, "get", '{"q": ', '"x"}'),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                 "usage": {"output_tokens": 5}}),
              ("message_stop", {"type": "message_stop"})]
    for size in (len(sse(*events)), 7):
        relay = make_relay("anthropic", req("openai"), "m")
        out = b"".join(feed(relay, sse(*events), size))
        arguments: dict[int, str] = {}
        for _, chunk in events_of(out):
            if chunk == b"[DONE]":
                continue
            for choice in chunk["choices"]:
                for c in choice["delta"].get("tool_calls") or ():
                    arguments[c["index"]] = arguments.get(c["index"], "") + c["function"].get("arguments", "")
        assert arguments == {0: "{}", 1: "{}", 2: '{"q": "x"}'}
        assert [json.loads(a) for a in arguments.values()] == [{}, {}, {"q": "x"}]


def test_a_refusal_reaches_an_anthropic_caller_as_its_text_with_the_refusal_stop_reason():
    """OpenAI's ``refusal`` (the model declined, ``content`` null) was lost: an empty answer ending
    ``end_turn``. Its words are the answer's text and the stop reason is Anthropic's ``refusal``."""
    chunk = {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": None,
                                                            "refusal": "I can't help"}, "finish_reason": None}]}
    more = {"id": "c1", "choices": [{"index": 0, "delta": {"refusal": " with that."}, "finish_reason": None}]}
    end = {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    relay = make_relay("openai", req("anthropic"), "m")
    events = events_of(relay.feed(sse(chunk, more, end, b"[DONE]")))
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == "I can't help with that." and relay.finished
    assert [e["delta"]["stop_reason"] for name, e in events if name == "message_delta"] == ["refusal"]
    whole = {"id": "c1", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with that."}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
    message = orjson.loads(convert_reply("openai", orjson.dumps(whole), req("anthropic"), "m"))
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


@pytest.mark.parametrize("wire, api", PAIRS)
def test_garbage_forwards_what_came_before_and_fails_the_stream(wire, api):
    raw = STREAMS[wire]
    sep = b"\r\n\r\n" if wire == "gemini" else b"\n\n"
    first = raw.index(sep) + len(sep)
    relay = make_relay(wire, req(api), "m")
    out = relay.feed(raw[:first] + b"data: {not json\n\n" + raw[first:])
    assert isinstance(relay.failure, UpstreamFailure) and "malformed" in relay.failure.message
    assert not relay.finished and out.endswith(b"\n\n")
    assert b"not json" not in out and b"[DONE]" not in out and b"message_stop" not in out


def test_openai_compatible_quirks_no_usage_no_created_reasoning():
    raw = sse({"choices": [{"index": 0, "delta": {"reasoning_content": "think "}}]},
              {"choices": [{"index": 0, "delta": {"content": "answer"}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, b"[DONE]")
    relay = make_relay("openai", req("anthropic"), "m")
    events = events_of(relay.feed(raw))
    kinds = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert kinds == ["thinking", "text"] and relay.finished
    assert relay.usage["usage_estimated"] and relay.usage["completion_tokens"] == 3   # 12 chars / 4
    passthrough = make_relay("openai", req("openai"), "m")
    assert passthrough.feed(raw) == raw
    assert passthrough.usage == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                                 "usage_estimated": True}   # one token per content event


def test_whole_replies_and_their_usage():
    gemini = orjson.dumps({"candidates": [{"content": {"parts": [{"text": "hey"}]}, "finishReason": "STOP"}],
                           "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}})
    as_anthropic = json.loads(convert_reply("gemini", gemini, req("anthropic"), "gem"))
    assert as_anthropic["content"] == [{"type": "text", "text": "hey"}] and as_anthropic["stop_reason"] == "end_turn"
    assert as_anthropic["usage"] == {"input_tokens": 3, "output_tokens": 1}
    assert reply_usage("gemini", gemini, req("openai")) == {"prompt_tokens": 3, "completion_tokens": 1,
                                                            "total_tokens": 4}
    bare = orjson.dumps({"choices": [{"message": {"content": "x" * 20}, "finish_reason": "stop"}]})
    assert reply_usage("openai", bare, req("openai")) == {"prompt_tokens": 10, "completion_tokens": 5,
                                                          "total_tokens": 15, "usage_estimated": True}
    with pytest.raises(UpstreamFailure):
        convert_reply("anthropic", b"<html>oops</html>", req("openai"), "m")
