"""The body checks of both client APIs, in process: same rules (JSON true/false is never a
number, null is absent, required is required), each API's own wording and path notation
(the JSON depth limit counted on the bytes: ``tests/core/test_bodies.py``)."""
from __future__ import annotations

import pytest

from fastinfer.errors import BadRequest
from fastinfer.gateway.anthropic_api import messages_request
from fastinfer.gateway.openai_api import chat_request

OPENAI = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _error(validate, base: dict, **fields) -> BadRequest:
    with pytest.raises(BadRequest) as exc:
        validate({**base, **fields}, {}, "req-1", 0.0)
    return exc.value


@pytest.mark.parametrize("field, value, message", [
    ("max_tokens", "ten", "'max_tokens' must be an integer; got str."),
    ("max_tokens", True, "'max_tokens' must be an integer; got bool."),
    ("temperature", True, "'temperature' must be a number; got bool."),
    ("top_p", "high", "'top_p' must be a number; got str."),
    ("stop", 3, "'stop' must be a string or an array; got int."),
    ("stream", 1, "'stream' must be a boolean; got int."),
    ("reasoning_effort", 2, "'reasoning_effort' must be a string; got int."),
])
def test_openai_wrong_types(field, value, message):
    err = _error(chat_request, OPENAI, **{field: value})
    assert str(err) == message and err.param == field


@pytest.mark.parametrize("field, value, message", [
    ("max_tokens", 2.5, "max_tokens: must be an integer; got float."),
    ("temperature", False, "temperature: must be a number; got bool."),
    ("system", 7, "system: must be a string or an array; got int."),
    ("tool_choice", [], "tool_choice: must be an object; got list."),
])
def test_anthropic_wrong_types(field, value, message):
    err = _error(messages_request, ANTHROPIC, **{field: value})
    assert str(err) == message and err.param == field


@pytest.mark.parametrize("validate, base", [(chat_request, OPENAI), (messages_request, ANTHROPIC)])
def test_right_types_and_nulls_pass(validate, base):
    req = validate({**base, "temperature": 0, "top_p": 0.5, "stream": False, "tools": None}, {}, "req-1", 0.0)
    assert req.model == "m" and req.stream is False


# ------------------------------------------------------------- nested fields, both notations

@pytest.mark.parametrize("fields, param, message", [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "image_url", "image_url": {"url": 5}}]}]},
     "messages[0].content[1].image_url.url", "must be a string; got int"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0].image_url", "is required"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]", "must be an object; got int"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]",
     "must be an object with a string 'type'"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]},
     "messages[0].tool_calls[0].function.arguments", "must be a string; got dict"),
    ({"messages": [{"role": "tool", "content": "r"}]}, "messages[0].tool_call_id", "is required"),
    ({"tools": ["s"]}, "tools[0]", "must be an object; got str"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters", "must be an object; got list"),
    ({"tool_choice": "sometimes"}, "tool_choice", "must be one of 'none', 'auto', 'required'; got 'sometimes'"),
    ({"tool_choice": {"type": "function", "function": 5}}, "tool_choice.function", "must be an object; got int"),
    ({"stop": ["a", None]}, "stop[1]", "must be a string; got null"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": "s"}}},
     "response_format.json_schema.schema", "must be an object; got str"),
    ({"n": 129}, "n", "must be between 1 and 128; got 129"),
    ({"max_completion_tokens": 2**31}, "max_completion_tokens", "must be between 1 and 2147483647; got 2147483648"),
    ({"stream_options": {"include_usage": "yes"}, "stream": True}, "stream_options.include_usage",
     "must be a boolean; got str"),
])
def test_openai_nested_fields_are_named_by_path(fields, param, message):
    err = _error(chat_request, OPENAI, **fields)
    assert err.param == param
    assert str(err) == f"'{param}' {message}."


@pytest.mark.parametrize("fields, path, message", [
    ({"messages": [{"role": "user", "content": [5]}]}, "messages.0.content.0", "must be an object; got int"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
     "messages.0.content.0.source", "must be an object; got int"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]},
     "messages.0.content.0.source.media_type", "is required"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [7]}]}]},
     "messages.0.content.0.content.0", "must be an object; got int"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]}]},
     "messages.0.content.0.input", "must be an object; got list"),
    ({"system": [{"type": "image"}]}, "system.0.type", "must be one of 'text'; got 'image'"),
    ({"tools": [{"name": "f", "input_schema": "s"}]}, "tools.0.input_schema", "must be an object; got str"),
    ({"tool_choice": {"type": ["auto"]}}, "tool_choice", "must be an object with a string 'type'"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name", "is required"),
    ({"stop_sequences": [1]}, "stop_sequences.0", "must be a string; got int"),
    ({"max_tokens": 0}, "max_tokens", "must be between 1 and 2147483647; got 0"),
])
def test_anthropic_nested_fields_are_named_by_path(fields, path, message):
    err = _error(messages_request, ANTHROPIC, **fields)
    assert str(err) == f"{path}: {message}."


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "assistant", "content": None,
                                 "tool_calls": [{"id": "c", "type": "function",
                                                 "function": {"name": "f", "arguments": "{}"}}]},
                                {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "r"}]},
                                {"role": "ipython", "content": "a compatible server's own role"},
                                {"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"},
                                                             {"type": "video_url", "video_url": {"url": "v"}}]}],
     "tools": [{"type": "custom", "custom": {"name": "c"}}], "tool_choice": {"type": "allowed_tools"},
     "stop": None, "n": 128, "max_tokens": 2**31 - 1, "seed": -1, "logit_bias": {"50256": -100}},
])
def test_openai_bodies_the_apis_accept_pass(body):
    assert chat_request(body, {}, "req-1", 0.0).model == "m"


def test_anthropic_bodies_the_api_accepts_pass():
    body = {"model": "m", "max_tokens": 1, "system": [{"type": "text", "text": "s", "cache_control": {"type": "x"}}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}},
                {"type": "tool_result", "tool_use_id": "t", "content": "r", "is_error": True},
                {"type": "search_result", "anything": [1, 2]}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "w"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True}, "metadata": {"user_id": "u"}}
    assert messages_request(body, {}, "req-1", 0.0).model == "m"


def test_a_checked_body_becomes_a_request_with_every_field_where_it_belongs():
    """The requests are made positionally (a class called with keywords makes a dict of them):
    each field lands in its own slot, the ones not given at their defaults."""
    from fastinfer.gateway.openai_api import passthrough_request
    headers = {"x-priority": "high", "x-session-id": "s-1", "x-session-close": "true"}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    req = chat_request(body, headers, "rid", 12.5)
    assert (req.api, req.model, req.body, req.stream, req.request_id, req.received_at) == (
        "openai", "m", body, True, "rid", 12.5)
    assert (req.priority, req.session_id, req.session_close, req.deadline, req.client_wants_usage,
            req.endpoint) == (1, "s-1", True, None, True, "chat")
    assert (req.key, req.usage, req.cost_usd, req.attempts, req.replica, req.trace) == (None,) * 3 + (0, None, None)
    plain = chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, {}, "r2", 1.0)
    assert (plain.stream, plain.priority, plain.session_id, plain.session_close, plain.client_wants_usage) == (
        False, 2, None, False, False)
    completion = passthrough_request({"model": "m", "prompt": "hi", "stream": True}, {}, "r3", 2.0, "completions")
    assert (completion.endpoint, completion.stream, completion.request_id, completion.client_wants_usage) == (
        "completions", True, "r3", False)
    embedding = passthrough_request({"model": "m", "input": "hi", "stream": True}, {}, "r4", 3.0, "embeddings")
    assert (embedding.endpoint, embedding.stream) == ("embeddings", False)
    message = messages_request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                               {"x-session-id": "s-2"}, "r5", 4.0)
    assert (message.api, message.stream, message.session_id, message.client_wants_usage, message.endpoint) == (
        "anthropic", False, "s-2", True, "chat")
