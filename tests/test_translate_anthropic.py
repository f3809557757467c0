"""OpenAI <-> Anthropic translation, as pure functions: requests, replies, stream translators."""
from __future__ import annotations

import json

import pytest

from fastinfer.formats.anthropic import (JSON_ANSWER_TOOL, AnthropicToOpenAIStream, OpenAIToAnthropicStream,
                                                     anthropic_to_openai_reply, anthropic_to_openai_request,
                                                     openai_to_anthropic_reply, openai_to_anthropic_request)
from fastinfer.errors import BadRequest
from fastinfer.formats.common import DONE, ERROR

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_openai_request_to_anthropic_merges_roles_and_maps_tools():
    body = {
        "model": "x", "stream": True, "max_completion_tokens": 77, "stop": "END", "temperature": 0.3, "user": "u1",
        "parallel_tool_calls": False, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "checking", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
            {"role": "user", "content": "thanks"},
        ]}
    out = openai_to_anthropic_request(body, "claude", 1000)
    assert out["model"] == "claude" and out["system"] == "one\n\ntwo"
    assert out["max_tokens"] == 77 and out["stop_sequences"] == ["END"] and out["stream"] is True
    assert out["metadata"] == {"user_id": "u1"}
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user"]   # both tool results and "thanks" share one user turn
    assistant = out["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "checking"}
    assert assistant[1] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    last = out["messages"][2]["content"]
    assert last == [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
                    {"type": "text", "text": "thanks"}]


def test_openai_request_default_max_tokens_and_no_system():
    out = openai_to_anthropic_request({"messages": [{"role": "user", "content": "hi"}]}, "c", 4096)
    assert out["max_tokens"] == 4096 and "system" not in out and "tools" not in out


def test_anthropic_request_to_openai_orders_tool_results_first():
    body = {
        "model": "x", "max_tokens": 10, "system": [{"type": "text", "text": "sys"}], "stop_sequences": ["S"],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search"}],   # server tool: not forwardable
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                              {"type": "tool_use", "id": "tu1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "text", "text": "and also"},
                                         {"type": "tool_result", "tool_use_id": "tu1", "is_error": True,
                                          "content": [{"type": "text", "text": "boom"}]}]},
        ]}
    out = anthropic_to_openai_request(body, "gpt")
    assert out["messages"][0] == {"role": "system", "content": "sys"}
    assert out["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "tu1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "tu1", "content": "Error: boom"}
    assert out["messages"][4] == {"role": "user", "content": "and also"}
    assert [t["function"]["name"] for t in out["tools"]] == ["f"]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["parallel_tool_calls"] is False and out["stop"] == ["S"] and out["max_tokens"] == 10


def test_request_round_trip_keeps_a_tool_conversation():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "r"}]
    back = anthropic_to_openai_request(openai_to_anthropic_request({"messages": messages}, "c", 5), "g")
    assert back["messages"][:2] == messages[:2] and back["messages"][3] == messages[3]
    assert json.loads(back["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}



def _refusal(translate, body) -> BadRequest:
    with pytest.raises(BadRequest) as refused:
        translate(body)
    assert refused.value.status == 400 and refused.value.code == "unsupported_content"
    assert refused.value.message.startswith(refused.value.param + ": ")
    return refused.value


def test_what_anthropic_has_no_block_for_is_refused_not_dropped():
    def translate(body):
        return openai_to_anthropic_request(body, "m", 100)
    hi = {"role": "user", "content": "hi"}
    for part in ({"type": "file", "file": {"file_id": "file-abc"}}, {"type": "file", "file": {"file_data": "JVBE"}},
                 {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}, {"type": "video_url"}):
        # in a user turn and in an assistant's: the part's own path, in OpenAI's notation
        for role in ("user", "assistant"):
            error = _refusal(translate, {"messages": [hi, {"role": role, "content": [{"type": "text", "text": "a"},
                                                                                      part]}]})
            assert error.param == "messages[1].content[1]" and "Anthropic" in error.message, error.message
    # a system prompt is text alone in Anthropic's API
    error = _refusal(translate, {"messages": [{"role": "system", "content": [
        {"type": "text", "text": "look:"}, {"type": "image_url", "image_url": "https://example.com/a.png"}]}, hi]})
    assert error.param == "messages[0].content[1]" and "`image_url`" in error.message
    # a tool's result may hold an image (a screenshot): carried as the result's blocks
    out = translate({"messages": [hi, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                  {"role": "tool", "tool_call_id": "call_1", "content": [
                                      {"type": "text", "text": "shot:"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}]})
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_1", "content": [
        {"type": "text", "text": "shot:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]}]
    # an answer of another shape than asked for: several choices, log probabilities
    for ask, param in (({"n": 2}, "n"), ({"logprobs": True, "top_logprobs": 2}, "logprobs")):
        assert _refusal(translate, {"messages": [hi], **ask}).param == param
    assert translate({"messages": [hi], "n": 1, "logprobs": False})["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    # what it has a block for is carried: a file's bytes, an assistant's refusal (what it said)
    out = translate({"messages": [
        {"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}]})
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "document", "source": {"type": "base64",
                                                                      "media_type": "application/pdf", "data": "JVBE"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]}]


def test_what_the_openai_format_has_no_part_for_is_refused_not_dropped():
    def translate(body):
        return anthropic_to_openai_request({"max_tokens": 5, **body}, "m")
    hi = {"role": "user", "content": "hi"}
    for block, where in (
            ({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}, ""),
            ({"type": "document", "source": {"type": "file", "file_id": "file_1"}}, ""),
            ({"type": "image", "source": {"type": "file", "file_id": "file_1"}}, ""),
            ({"type": "search_result", "source": "s", "title": "t", "content": []}, ""),
            ({"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "shot:"}, {"type": "image", "source": {"type": "url", "url": "u"}}]},
             ".content.1")):
        error = _refusal(translate, {"messages": [hi, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                   block]}]})
        assert error.param == "messages.1.content.1" + where, error.message
        assert f"`{block['content'][1]['type'] if where else block['type']}`" in error.message
    # carried: a text document, a tool result of text blocks; signed reasoning is left out
    out = translate({"messages": [
        {"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "doc"}},
                                     {"type": "thinking", "thinking": "t", "signature": "s"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "21"}]}]}]})
    assert out["messages"] == [{"role": "user", "content": "doc"},
                               {"role": "tool", "tool_call_id": "t1", "content": "21"}]


def test_anthropic_reply_to_openai_with_cache_and_thinking():
    reply = {"id": "msg_1", "model": "claude", "stop_reason": "tool_use",
             "content": [{"type": "thinking", "thinking": "let me see"}, {"type": "text", "text": "ok"},
                         {"type": "tool_use", "id": "tu", "name": "f", "input": {"x": 2}}],
             "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 7}}
    out = anthropic_to_openai_reply(reply)
    message = out["choices"][0]["message"]
    assert message["content"] == "ok" and message["reasoning_content"] == "let me see"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x":2}'}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                            "prompt_tokens_details": {"cached_tokens": 90}}


def test_openai_reply_to_anthropic():
    reply = {"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "hi", "reasoning_content": "think", "tool_calls": [CALL]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23,
                  "prompt_tokens_details": {"cached_tokens": 5}}}
    out = openai_to_anthropic_reply(reply)
    assert out["type"] == "message" and out["id"].startswith("msg_")
    assert [b["type"] for b in out["content"]] == ["thinking", "text", "tool_use"]
    assert out["content"][2]["input"] == {"city": "Paris"}
    assert out["stop_reason"] == "tool_use"   # a compatible server said "stop" after a tool call
    assert out["usage"] == {"input_tokens": 15, "output_tokens": 3, "cache_read_input_tokens": 5}


def _run(translator, items):
    out = []
    for event, data in items:
        out += translator.push(event, data)
    return out


def test_anthropic_stream_to_openai_chunks():
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_9", "model": "claude",
                                                                "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "tu", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a"'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ': 1}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    t = AnthropicToOpenAIStream(include_usage=True)
    out = _run(t, events)
    chunks = [d for _, d in out if d is not DONE]
    assert out[-1] == (None, DONE) and t.finished
    assert chunks[0]["id"] == "msg_9" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {"index": 0, "id": "tu", "type": "function",
                                          "function": {"name": "f", "arguments": ""}}
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5])
    assert json.loads(args) == {"a": 1}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert t.usage == {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20}


def test_anthropic_stream_error_and_unfinished():
    t = AnthropicToOpenAIStream(include_usage=False)
    assert t.push("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}) == [
        (ERROR, {"message": "busy", "type": "overloaded_error"})]
    assert not t.finished


def _chunk(delta=None, finish=None, **extra):
    return None, {"id": "c", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


def test_openai_chunks_to_anthropic_events_with_reasoning_and_parallel_tools():
    t = OpenAIToAnthropicStream("m")
    out = _run(t, [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning_content": "hmm"}),
        _chunk({"content": "Sure"}),
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        _chunk(finish="tool_calls"),
        (None, {"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}),
        (None, DONE),
    ])
    names = [e for e, _ in out]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    starts = [d["content_block"]["type"] for e, d in out if e == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    assert names.count("content_block_stop") == 4
    json_parts = [d["delta"]["partial_json"] for e, d in out
                  if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    assert json_parts == ['{"x"', ": 1}", "{}"]
    delta = out[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"] == {"input_tokens": 4, "output_tokens": 6}
    assert t.finished


def test_openai_chunks_without_usage_are_estimated_and_need_done():
    t = OpenAIToAnthropicStream("m", estimate=lambda chars: {"prompt_tokens": 2, "completion_tokens": chars // 4,
                                                             "total_tokens": 2 + chars // 4, "usage_estimated": True})
    out = _run(t, [_chunk({"content": "12345678"}), _chunk(finish="stop")])
    assert not t.finished and out[-1][0] == "content_block_stop"   # no message_stop before [DONE]
    out = t.push(None, DONE)
    assert out[-2][1]["usage"] == {"input_tokens": 2, "output_tokens": 2}
    assert out[-2][1]["delta"]["stop_reason"] == "end_turn" and t.usage["usage_estimated"]


def test_openai_error_chunk_becomes_error_item():
    t = OpenAIToAnthropicStream("m")
    assert t.push(None, {"error": {"message": "bad", "type": "server_error"}}) == [
        (ERROR, {"message": "bad", "type": "server_error"})]


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_a_json_answer_is_asked_of_anthropic_as_a_forced_tool_call():
    hi = {"role": "user", "content": "where?"}

    def translate(response_format, **more):
        return openai_to_anthropic_request({"messages": [hi], "response_format": response_format, **more}, "m", 100)
    out = translate({"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}})
    assert [t["name"] for t in out["tools"]] == [JSON_ANSWER_TOOL] and out["tools"][0]["input_schema"] == SCHEMA
    assert out["tool_choice"] == {"type": "tool", "name": JSON_ANSWER_TOOL}
    assert translate({"type": "json_object"})["tools"][0]["input_schema"] == {"type": "object"}
    assert "tools" not in translate({"type": "text"}) and "tool_choice" not in translate({"type": "text"})
    # what a tool call cannot be asked for is refused, not sent as a plain text request
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert _refusal(lambda body: translate(**body), {"response_format": {"type": "json_object"},
                                                     "tools": tools}).param == "response_format"
    assert _refusal(lambda body: translate(**body), {"response_format": {"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"type": "array"}}}}).param == "response_format.json_schema.schema"


def test_the_json_answers_tool_call_comes_back_as_the_answers_text():
    reply = {"id": "msg_1", "model": "claude", "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4},
             "content": [{"type": "tool_use", "id": "tu", "name": JSON_ANSWER_TOOL, "input": {"city": "Paris"}}]}
    choice = anthropic_to_openai_reply(reply, answer_tool=JSON_ANSWER_TOOL)["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"city": "Paris"} and "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"
    # a request that asked for no JSON answer: the same call is a tool call like any other
    assert anthropic_to_openai_reply(reply)["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == JSON_ANSWER_TOOL

    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_9", "model": "claude", "usage": {}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "tu", "name": JSON_ANSWER_TOOL, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": '{"city": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": '"Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    chunks = [data for _, data in _run(AnthropicToOpenAIStream(False, answer_tool=JSON_ANSWER_TOOL), events)
              if data is not DONE]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert json.loads("".join(d.get("content", "") for d in deltas)) == {"city": "Paris"}
    assert not any("tool_calls" in d for d in deltas) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    plain = [data for _, data in _run(AnthropicToOpenAIStream(False), events) if data is not DONE]
    assert plain[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_effort_becomes_anthropic_thinking_inside_max_tokens():
    hi = {"role": "user", "content": "think"}

    def translate(**body):
        return openai_to_anthropic_request({"messages": [hi], **body}, "m", 8000)
    out = translate(reasoning_effort="high")
    # no max_tokens of the caller's: the budget comes on top of the deployment's default (8000)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096} and out["max_tokens"] == 8000 + 4096
    assert translate(reasoning_effort="minimal")["thinking"]["budget_tokens"] == 1024   # Anthropic's least
    # OpenAI counts reasoning in max_tokens: the budget leaves room for the text after it
    assert translate(reasoning_effort="high", max_completion_tokens=3000)["thinking"]["budget_tokens"] == 2999
    assert "thinking" not in translate(reasoning_effort="none") and "thinking" not in translate()
    # what Anthropic refuses beside thinking is refused here, by name
    for body in ({"reasoning_effort": "low", "temperature": 0.2}, {"reasoning_effort": "low", "top_p": 0.5},
                 {"reasoning_effort": "low", "max_tokens": 900}, {"reasoning_effort": "extreme"},
                 {"reasoning_effort": "low", "response_format": {"type": "json_object"}},
                 {"reasoning_effort": "low", "tool_choice": "required",
                  "tools": [{"type": "function", "function": {"name": "f"}}]}):
        assert _refusal(lambda b: translate(**b), body).param == "reasoning_effort", body
    assert translate(reasoning_effort="low", temperature=1.0)["thinking"]["budget_tokens"] == 1024
    # inside a tool loop Anthropic wants the call's signed thinking block back, which an OpenAI
    # client never has: that turn goes without thinking rather than fail
    loop = [hi, {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert "thinking" not in openai_to_anthropic_request({"messages": loop, "reasoning_effort": "high"}, "m", 8000)
    after = loop + [{"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "and tomorrow?"}]
    assert "thinking" in openai_to_anthropic_request({"messages": after, "reasoning_effort": "high"}, "m", 8000)
