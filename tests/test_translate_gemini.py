"""OpenAI <-> Gemini translation, as pure functions: request, reply, stream translator."""
from __future__ import annotations

import json

import pytest

from fastinfer.errors import BadRequest
from fastinfer.formats.common import DONE, ERROR
from fastinfer.formats.gemini import (GeminiToOpenAIStream, gemini_to_openai_reply,
                                                  openai_to_gemini_request)

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_openai_request_to_gemini():
    body = {
        "model": "x", "max_tokens": 50, "temperature": 0.1, "stop": ["Z"], "n": 2, "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
            "type": "object", "additionalProperties": False, "properties": {"a": {"type": "string", "default": "q"}}}}},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {
            "type": "object", "additionalProperties": False, "properties": {"city": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "now"}},
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "data:image/webp;base64,QUJD"}}]},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_x", "name": "other", "content": "plain"},
        ]}
    out = openai_to_gemini_request(body)
    assert out["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert out["contents"][0] == {"role": "user", "parts": [{"text": "hi"},
                                                            {"inlineData": {"mimeType": "image/webp", "data": "QUJD"}}]}
    assert out["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                                                                                "args": {"city": "Paris"}}}]}
    # both function responses in one user turn; names recovered from the tool call ids
    assert out["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "other", "response": {"content": "plain"}}}]}
    config = out["generationConfig"]
    assert config["maxOutputTokens"] == 50 and config["stopSequences"] == ["Z"] and config["candidateCount"] == 2
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {"type": "object", "properties": {"a": {"type": "string"}}}
    decls = out["tools"][0]["functionDeclarations"]
    assert decls[0] == {"name": "get_weather", "description": "w",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    assert decls[1] == {"name": "now"}   # Gemini rejects an empty object schema
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["now"]}}


def test_gemini_reply_to_openai():
    reply = {"responseId": "r1", "modelVersion": "gemini-x", "candidates": [{"index": 0, "finishReason": "STOP",
             "content": {"role": "model", "parts": [{"text": "plan", "thought": True}, {"text": "Hello"},
                                                    {"functionCall": {"name": "f", "args": {"k": [1]}}}]}}],
             "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 4, "thoughtsTokenCount": 6,
                               "cachedContentTokenCount": 2, "totalTokenCount": 18}}
    out = gemini_to_openai_reply(reply, "fallback-name")
    choice = out["choices"][0]
    assert out["id"] == "r1" and out["model"] == "gemini-x"
    assert choice["message"]["content"] == "Hello" and choice["message"]["reasoning_content"] == "plan"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"k": [1]}
    assert choice["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18,
                            "prompt_tokens_details": {"cached_tokens": 2},
                            "completion_tokens_details": {"reasoning_tokens": 6}}


def test_gemini_blocked_prompt_and_safety():
    out = gemini_to_openai_reply({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert out["choices"][0]["finish_reason"] == "content_filter"
    out = gemini_to_openai_reply({"candidates": [{"finishReason": "MAX_TOKENS",
                                                  "content": {"parts": [{"text": "a"}]}}]}, "m")
    assert out["choices"][0]["finish_reason"] == "length"


def test_gemini_stream_to_openai():
    t = GeminiToOpenAIStream("gem", include_usage=True)
    first = t.push(None, {"responseId": "r", "candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})
    assert [d["choices"][0]["delta"] for _, d in first] == [{"role": "assistant", "content": ""}, {"content": "Hel"}]
    assert not t.finished
    call = t.push(None, {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}}]})
    tc = call[0][1]["choices"][0]["delta"]["tool_calls"][0]
    assert tc["index"] == 0 and tc["function"] == {"name": "f", "arguments": '{"a":1}'} and tc["id"].startswith("call_")
    last = t.push(None, {"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
                         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}})
    assert last[0][1]["choices"][0]["delta"] == {"content": "lo"}
    assert last[1][1]["choices"][0]["finish_reason"] == "tool_calls"
    assert last[2][1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert last[3] == (None, DONE) and t.finished
    assert all(d["id"] == "r" for _, d in first + call + last[:3])


def test_gemini_stream_error():
    t = GeminiToOpenAIStream("gem", include_usage=False)
    assert t.push(None, {"error": {"code": 400, "message": "bad key", "status": "INVALID_ARGUMENT"}}) == [
        (ERROR, {"message": "bad key", "type": "invalid_request_error"})]



def test_several_choices_in_a_stream_are_refused_whole_they_are_carried():
    """Gemini's stream is read as one candidate's: ``n`` above 1 with ``stream`` is a 400 naming
    ``n``, never a stream that drops every choice but the first; whole, ``candidateCount`` carries it."""
    from types import SimpleNamespace
    from fastinfer.formats import GEMINI
    deployment = SimpleNamespace(upstream_model="g", drop_params=False, takes_every_param=False)
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "n": 2}
    with pytest.raises(BadRequest) as refused:
        GEMINI.request_from_pivot(dict(body), deployment, stream=True)
    assert refused.value.param == "n" and "in a stream" in refused.value.message
    assert GEMINI.request_from_pivot(dict(body), deployment, stream=False)["generationConfig"] == {"candidateCount": 2}
    assert GEMINI.request_from_pivot({**body, "n": 1}, deployment, stream=True)["generationConfig"] == {"candidateCount": 1}


def test_what_gemini_has_no_place_for_is_refused_not_dropped():
    base = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(BadRequest) as refused:     # not translated: the reply would come without them
        openai_to_gemini_request({**base, "logprobs": True})
    assert refused.value.param == "logprobs"
    assert openai_to_gemini_request({**base, "logprobs": False, "n": 3})["generationConfig"] == {"candidateCount": 3}
    # a system prompt and a function's response are text alone in Gemini's API
    image = {"type": "image_url", "image_url": "https://example.com/a.png"}
    for message in ({"role": "system", "content": [{"type": "text", "text": "s"}, image]},
                    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "s"}, image]}):
        with pytest.raises(BadRequest) as refused:
            openai_to_gemini_request({**base, "messages": [base["messages"][0], message]})
        assert refused.value.param == "messages[1].content[1]" and "`image_url`" in refused.value.message
    for part in ({"type": "file", "file": {"file_id": "file-abc"}}, {"type": "video_url", "video_url": "v"}):
        body = {**base, "messages": [{"role": "system", "content": "s"},
                                     {"role": "user", "content": [{"type": "text", "text": "t"}, part]}]}
        with pytest.raises(BadRequest) as refused:
            openai_to_gemini_request(body)
        assert refused.value.param == "messages[1].content[1]", refused.value.message
        assert refused.value.code == "unsupported_content" and "Gemini" in refused.value.message


def test_tools_of_other_types_are_left_out_of_gemini_declarations():
    # validation lets a tool of another type through as an opaque object, whatever its "function"
    # holds; Gemini declares functions only, and a tool is an offer: the model answers without it
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "", "function": True}, {"type": "web_search"},
                      {"type": "function", "function": {"name": "now"}}]}
    assert openai_to_gemini_request(body)["tools"] == [{"functionDeclarations": [{"name": "now"}]}]
    body["tools"] = body["tools"][:2]
    assert "tools" not in openai_to_gemini_request(body)


def test_audio_and_refusals_are_carried_to_gemini():
    body = {"model": "x", "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]}]}
    contents = openai_to_gemini_request(body)["contents"]
    assert contents == [{"role": "user", "parts": [{"inlineData": {"mimeType": "audio/wav", "data": "UklGR"}}]},
                        {"role": "model", "parts": [{"text": "I can't."}]}]


def test_reasoning_effort_becomes_gemini_thinking_budget():
    base = {"model": "x", "messages": [{"role": "user", "content": "think"}]}
    for effort, budget in (("none", 0), ("minimal", 128), ("low", 1024), ("medium", 2048), ("high", 4096)):
        config = openai_to_gemini_request({**base, "reasoning_effort": effort})["generationConfig"]
        assert config == {"thinkingConfig": {"thinkingBudget": budget}}, effort
    assert "generationConfig" not in openai_to_gemini_request(base)
    with pytest.raises(BadRequest) as refused:
        openai_to_gemini_request({**base, "reasoning_effort": "extreme"})
    assert refused.value.param == "reasoning_effort" and "none, minimal, low, medium, high" in refused.value.message
