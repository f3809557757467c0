"""Every client API to every upstream, with the official ``openai`` and ``anthropic`` SDKs.

Topology: SDK -> fastinfer serve (1 worker) -> mock-upstream, one deployment
per upstream wire format: ``oa`` (openai_compatible), ``an`` (anthropic),
``ge`` (gemini), plus ``mk`` (the in-process mock provider). One gateway and
one mock upstream serve the whole module; each test resets the mock.
"""
from __future__ import annotations

import base64
import json
import re
import time

import anthropic
import openai
import pydantic
import pytest

from conftest import every_format_config
from procs import http_json, metric_value, metrics_text, start_gateway_proc, wait_for

UPSTREAMS = ("oa", "an", "ge")
ALL = UPSTREAMS + ("mk",)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()
TOOLS_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOLS_ANTHROPIC = [{"name": "get_weather", "description": "Weather of a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
SYSTEM = "be brief"
ASK = "alpha beta gamma"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}]


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    proc = start_gateway_proc(tmp_path_factory.mktemp("gateway"), every_format_config(upstream.base), workers=1)
    yield proc
    proc.stop(timeout=20)


@pytest.fixture(autouse=True)
def fresh_upstream(upstream):
    upstream.reset()
    upstream.control(tokens=5, itl_ms=0, latency_ms=0)


# the clients close before the gateway stops: a draining gateway keeps idle connections until drain_grace_s ends
@pytest.fixture(scope="module")
def oai(gateway):
    with openai.OpenAI(base_url=gateway.base + "/v1", api_key="sk-client", max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def ant(gateway):
    with anthropic.Anthropic(base_url=gateway.base, api_key="sk-client", max_retries=0, timeout=20) as c:
        yield c


def _tokens(upstream, dep: str, n: int) -> None:
    """Make the next upstream answer ``n`` tokens (the in-process mock is fixed at 5)."""
    if dep != "mk":
        upstream.script([{"tokens": n}])


# ====================================================== OpenAI SDK as client

@pytest.mark.parametrize("dep", ALL)
def test_openai_text_system_usage(oai, upstream, dep):
    resp = oai.chat.completions.create(model=dep, messages=MESSAGES)
    assert resp.choices[0].message.content == "alpha beta gamma alpha beta "
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (5, 5, 10)


def test_openai_to_anthropic_wire(oai, upstream):
    oai.chat.completions.create(model="an", messages=MESSAGES, temperature=1.5, stop=["END"])
    got = upstream.received()[-1]
    assert got["path"] == "/v1/messages"
    assert got["headers"]["x-api-key"] == "sk-ant-secret"
    assert got["headers"]["anthropic-version"] == "2023-06-01"
    assert "sk-client" not in json.dumps(got["headers"])
    body = got["body"]
    assert body["model"] == "claude-mock"
    assert body["system"] == SYSTEM
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": ASK}]}]
    assert body["max_tokens"] == 300          # the deployment's default_max_tokens
    assert body["temperature"] == 1.0         # clamped to Anthropic's range
    assert body["stop_sequences"] == ["END"]


def test_openai_to_gemini_wire(oai, upstream):
    oai.chat.completions.create(model="ge", messages=MESSAGES, max_tokens=9, top_p=0.5,
                                response_format={"type": "json_object"})
    got = upstream.received()[-1]
    assert got["path"] == "/v1beta/models/gemini-mock:generateContent"
    assert got["headers"]["x-goog-api-key"] == "goog-secret"
    body = got["body"]
    assert body["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": ASK}]}]
    assert body["generationConfig"] == {"maxOutputTokens": 9, "topP": 0.5, "responseMimeType": "application/json"}


@pytest.mark.parametrize("dep", ALL)
def test_openai_stream_with_usage(oai, upstream, dep):
    chunks = list(oai.chat.completions.create(model=dep, messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma alpha beta "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 5


@pytest.mark.parametrize("dep", UPSTREAMS)
def test_openai_stream_without_usage(oai, upstream, dep):
    chunks = list(oai.chat.completions.create(model=dep, messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_length_finish(oai, upstream):
    resp = oai.chat.completions.create(model="an", messages=MESSAGES, max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert upstream.received()[-1]["body"]["max_tokens"] == 3


def test_openai_images_reach_anthropic_and_gemini(oai, upstream):
    content = [{"type": "text", "text": "what is this"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]
    oai.chat.completions.create(model="an", messages=[{"role": "user", "content": content}])
    blocks = upstream.received()[-1]["body"]["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    oai.chat.completions.create(model="ge", messages=[{"role": "user", "content": content}])
    parts = upstream.received()[-1]["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[2] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}


def _openai_call(oai, dep: str, messages: list, stream: bool):
    """(content, tool_calls as dicts, finish_reason) of one answer, streamed or not."""
    if not stream:
        resp = oai.chat.completions.create(model=dep, messages=messages, tools=TOOLS_OPENAI)
        choice = resp.choices[0]
        calls = [c.model_dump() for c in choice.message.tool_calls or ()]
        return choice.message.content, calls, choice.finish_reason
    text, calls, finish = "", {}, None
    for chunk in oai.chat.completions.create(model=dep, messages=messages, tools=TOOLS_OPENAI, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or ():
            call = calls.setdefault(tc.index, {"id": None, "type": "function",
                                               "function": {"name": "", "arguments": ""}})
            call["id"] = tc.id or call["id"]
            call["function"]["name"] += tc.function.name or "" if tc.function else ""
            call["function"]["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    return text, list(calls.values()), finish


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dep", UPSTREAMS)
def test_openai_tool_round_trip(oai, upstream, dep, stream):
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    _, calls, finish = _openai_call(oai, dep, messages, stream)
    assert finish == "tool_calls"
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert calls[0]["id"]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": calls[0]["id"], "type": "function", "function": calls[0]["function"]}]},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21C"}]
    text, calls, finish = _openai_call(oai, dep, messages, stream)
    assert "sunny, 21C" in text and finish == "stop" and not calls
    body = upstream.received()[-1]["body"]
    if dep == "an":   # the tool result went back as a tool_result for the tool_use id
        result = body["messages"][-1]["content"][0]
        assert result == {"type": "tool_result", "tool_use_id": messages[1]["tool_calls"][0]["id"],
                          "content": "sunny, 21C"}
        assert body["messages"][-2]["content"][0]["input"] == {"city": "Paris"}
    if dep == "ge":   # Gemini answers function calls by name
        assert body["contents"][-1]["parts"][0]["functionResponse"]["name"] == "get_weather"
        assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_openai_reasoning_effort_reaches_anthropic_and_gemini_as_thinking(oai, upstream):
    oai.chat.completions.create(model="an", messages=MESSAGES, reasoning_effort="medium")
    body = upstream.received()[-1]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 300 + 2048      # the deployment's default, and the budget on top
    oai.chat.completions.create(model="ge", messages=MESSAGES, reasoning_effort="low")
    assert upstream.received()[-1]["body"]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}
    oai.chat.completions.create(model="oa", messages=MESSAGES, reasoning_effort="low")
    assert upstream.received()[-1]["body"]["reasoning_effort"] == "low"     # forwarded as written
    with pytest.raises(openai.BadRequestError) as refused:   # Anthropic takes no thinking beside a temperature
        oai.chat.completions.create(model="an", messages=MESSAGES, reasoning_effort="low", temperature=0.1)
    assert refused.value.body["param"] == "reasoning_effort" and refused.value.body["code"] == "unsupported_content"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_json_schema_answer_from_anthropic(oai, upstream, stream):
    # Anthropic has no response_format: the answer is asked for as a forced tool call, which comes
    # back as the answer's text, a finished answer (the OpenAI SDK's parse() reads it)
    schema = TOOLS_OPENAI[0]["function"]["parameters"]
    response_format = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    if stream:
        text, calls, finish = "", [], None
        with oai.chat.completions.create(model="an", messages=MESSAGES, response_format=response_format,
                                         stream=True) as chunks:
            for chunk in chunks:
                text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                calls += chunk.choices[0].delta.tool_calls or [] if chunk.choices else []
                finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    else:
        message = oai.chat.completions.create(model="an", messages=MESSAGES, response_format=response_format)
        text, calls, finish = message.choices[0].message.content, message.choices[0].message.tool_calls, \
            message.choices[0].finish_reason
    assert json.loads(text) == {"city": "Paris"} and not calls and finish == "stop"
    body = upstream.received()[-1]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": body["tools"][0]["name"]}
    assert body["tools"][0]["input_schema"] == schema and len(body["tools"]) == 1
    if not stream:     # the SDK's structured outputs read it into the caller's type
        class Place(pydantic.BaseModel):
            city: str
        parsed = oai.chat.completions.parse(model="an", messages=MESSAGES, response_format=Place)
        assert parsed.choices[0].message.parsed == Place(city="Paris")


@pytest.mark.parametrize("dep", UPSTREAMS)
@pytest.mark.parametrize("status, error", [(400, openai.BadRequestError), (429, openai.RateLimitError),
                                           (500, openai.InternalServerError)])
def test_openai_upstream_errors(oai, upstream, dep, status, error):
    upstream.script([{"status": status, "message": f"upstream says no {status}"}])
    with pytest.raises(error) as exc:
        oai.chat.completions.create(model=dep, messages=MESSAGES)
    assert exc.value.status_code == {500: 502}.get(status, status)
    if status == 400:
        assert "upstream says no 400" in exc.value.body["message"]


def _arrivals(chunks, has_text) -> list[float]:
    t0 = time.monotonic()
    return [time.monotonic() - t0 for c in chunks if has_text(c)]


@pytest.mark.parametrize("dep", ["an", "ge"])
def test_openai_translated_stream_is_not_buffered(oai, upstream, dep):
    upstream.control(itl_ms=150)
    arrivals = _arrivals(oai.chat.completions.create(model=dep, messages=MESSAGES, stream=True),
                         lambda c: c.choices and c.choices[0].delta.content)
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.45   # ~150 ms apart, as the upstream sent them


def test_openai_completions_and_embeddings_passthrough(oai, upstream):
    resp = oai.completions.create(model="oa", prompt="one two", max_tokens=3)
    assert resp.choices[0].text == "one two one "
    assert upstream.received()[-1]["path"] == "/v1/completions"
    emb = oai.embeddings.create(model="oa", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert upstream.received()[-1]["body"]["model"] == "mock-model"
    for dep in ("an", "ge"):
        with pytest.raises(openai.BadRequestError):
            oai.embeddings.create(model=dep, input="a")


def test_openai_completions_stream_passthrough(oai, upstream, gateway):
    """A streamed /v1/completions goes through as a stream: the SDK reads the text chunk by chunk,
    and its usage is counted though the client did not ask for it (the gateway did)."""
    before = metric_value(metrics_text(gateway), 'fastinfer_tokens_total{deployment="oa",direction="output"}') or 0
    chunks = list(oai.completions.create(model="oa", prompt="one two", max_tokens=3, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two one "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert not any(c.usage for c in chunks)           # the client did not ask for the usage chunk
    sent = upstream.received()[-1]
    assert sent["path"] == "/v1/completions" and sent["body"]["stream_options"] == {"include_usage": True}
    after = wait_for(lambda: (metric_value(metrics_text(gateway), 'fastinfer_tokens_total{deployment="oa",'
                                                              'direction="output"}') or 0) - before or None)
    assert after == 3


# =================================================== Anthropic SDK as client

@pytest.mark.parametrize("dep", ALL)
def test_anthropic_text_system_usage(ant, upstream, dep):
    _tokens(upstream, dep, 5)
    msg = ant.messages.create(model=dep, max_tokens=50, system=SYSTEM, messages=[{"role": "user", "content": ASK}])
    assert msg.type == "message" and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "alpha beta gamma alpha beta "
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 5)


@pytest.mark.parametrize("dep", UPSTREAMS)
def test_anthropic_max_tokens_stop_reason(ant, upstream, dep):
    msg = ant.messages.create(model=dep, max_tokens=2, messages=[{"role": "user", "content": ASK}])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 2


def test_anthropic_to_openai_wire(ant, upstream):
    ant.messages.create(model="oa", max_tokens=7, system=SYSTEM, stop_sequences=["X"], extra_body={"temperature": 0.2},
                        messages=[{"role": "user", "content": ASK}])
    got = upstream.received()[-1]
    assert got["path"] == "/v1/chat/completions"
    assert got["headers"]["authorization"] == "Bearer sk-oa-secret"
    body = got["body"]
    assert body["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}]
    assert (body["model"], body["max_tokens"], body["stop"], body["temperature"]) == ("mock-model", 7, ["X"], 0.2)


@pytest.mark.parametrize("dep", ALL)
def test_anthropic_stream(ant, upstream, dep):
    _tokens(upstream, dep, 5)
    with ant.messages.stream(model=dep, max_tokens=50, system=SYSTEM,
                             messages=[{"role": "user", "content": ASK}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "alpha beta gamma alpha beta " and len(pieces) == 5
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens == 5


def test_anthropic_stream_passthrough_is_byte_identical(gateway, upstream):
    """Anthropic caller, Anthropic upstream: the gateway forwards the upstream's events unchanged."""
    import urllib.request
    body = json.dumps({"model": "an", "max_tokens": 50, "stream": True,
                       "messages": [{"role": "user", "content": ASK}]}).encode()
    req = urllib.request.Request(gateway.base + "/v1/messages", data=body, headers={"content-type": "application/json"})
    before = metrics_text(gateway)
    via_gateway = urllib.request.urlopen(req, timeout=10).read()
    direct_body = json.dumps({"model": "claude-mock", "max_tokens": 50, "stream": True,
                              "messages": [{"role": "user", "content": ASK}]}).encode()
    direct = urllib.request.Request(upstream.base + "/v1/messages", data=direct_body,
                                    headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    straight = urllib.request.urlopen(direct, timeout=10).read()
    def without_ids(raw: bytes) -> bytes:   # every message has its own id (toolu_ ids derive from it)
        return re.sub(rb"msg_mock[0-9a-f]+", b"ID", raw)
    assert b"msg_mock" in via_gateway and without_ids(via_gateway) == without_ids(straight)
    # the usage counted is the stream's own (its start's input, its message_delta's output), not an estimate
    after = metrics_text(gateway)
    moved = {series: metric_value(after, series) - metric_value(before, series) for series in (
        'fastinfer_tokens_total{deployment="an",direction="input"}',
        'fastinfer_tokens_total{deployment="an",direction="output"}',
        'fastinfer_usage_estimated_total{deployment="an"}')}
    assert list(moved.values()) == [3, 5, 0], moved      # the mock counts the words: "alpha beta gamma"


def test_anthropic_images_reach_openai_and_gemini(ant, upstream):
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/dog.png"}},
               {"type": "text", "text": "describe"}]
    ant.messages.create(model="oa", max_tokens=5, messages=[{"role": "user", "content": content}])
    parts = upstream.received()[-1]["body"]["messages"][0]["content"]
    assert parts == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                     {"type": "image_url", "image_url": {"url": "https://example.com/dog.png"}},
                     {"type": "text", "text": "describe"}]
    ant.messages.create(model="ge", max_tokens=5, messages=[{"role": "user", "content": content}])
    parts = upstream.received()[-1]["body"]["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[2] == {"text": "describe"}


def _anthropic_call(ant, dep: str, messages: list, stream: bool):
    if not stream:
        return ant.messages.create(model=dep, max_tokens=100, tools=TOOLS_ANTHROPIC, messages=messages)
    with ant.messages.stream(model=dep, max_tokens=100, tools=TOOLS_ANTHROPIC, messages=messages) as s:
        for _ in s:
            pass
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dep", UPSTREAMS)
def test_anthropic_tool_round_trip(ant, upstream, dep, stream):
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    msg = _anthropic_call(ant, dep, messages, stream)
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
    messages += [{"role": "assistant", "content": [b.model_dump() for b in msg.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                               "content": "rainy, 12C"}]}]
    msg = _anthropic_call(ant, dep, messages, stream)
    assert msg.stop_reason == "end_turn"
    assert "rainy, 12C" in "".join(b.text for b in msg.content if b.type == "text")
    body = upstream.received()[-1]["body"]
    if dep == "oa":   # OpenAI got the tool call back on the assistant turn and a tool message for it
        assert body["messages"][-2]["tool_calls"][0]["id"] == uses[0].id
        assert json.loads(body["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": uses[0].id, "content": "rainy, 12C"}
        assert body["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("dep", UPSTREAMS)
@pytest.mark.parametrize("status, error", [(400, anthropic.BadRequestError), (429, anthropic.RateLimitError),
                                           (500, anthropic.InternalServerError)])
def test_anthropic_upstream_errors(ant, upstream, dep, status, error):
    upstream.script([{"status": status, "message": f"upstream says no {status}"}])
    with pytest.raises(error) as exc:
        ant.messages.create(model=dep, max_tokens=10, messages=[{"role": "user", "content": ASK}])
    assert exc.value.status_code == {500: 502}.get(status, status)
    assert exc.value.body["type"] == "error"
    if status == 400:
        assert "upstream says no 400" in exc.value.body["error"]["message"]


@pytest.mark.parametrize("dep", ["oa", "ge"])
def test_anthropic_translated_stream_is_not_buffered(ant, upstream, dep):
    upstream.control(itl_ms=150)
    _tokens(upstream, dep, 5)
    with ant.messages.stream(model=dep, max_tokens=50, messages=[{"role": "user", "content": ASK}]) as s:
        arrivals = _arrivals(s.text_stream, bool)
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.45


@pytest.mark.parametrize("step", [{"cut_after": 4}, {"garbage_at": 3}], ids=["cut", "garbage"])
@pytest.mark.parametrize("dep", ["oa", "an", "ge"])
def test_anthropic_broken_stream_ends_with_error_not_stop(ant, upstream, dep, step):
    upstream.script([{"tokens": 10, **step}])
    with pytest.raises(anthropic.APIStatusError):
        with ant.messages.stream(model=dep, max_tokens=50, messages=[{"role": "user", "content": ASK}]) as s:
            for _ in s:
                pass


def test_anthropic_in_stream_upstream_error_reaches_openai_client(oai, upstream):
    upstream.script([{"tokens": 10, "stream_error_at": 4}])
    with pytest.raises(openai.APIError) as exc:
        for _ in oai.chat.completions.create(model="an", messages=MESSAGES, stream=True):
            pass
    assert "Overloaded" in str(exc.value)


@pytest.mark.parametrize("body, param", [
    ({"model": "an", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "an", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "an", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "an", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
])
def test_anthropic_bad_requests_are_anthropic_shaped(gateway, body, param):
    status, _, answer = http_json("POST", gateway.base + "/v1/messages", body)
    assert status == 400
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert param in answer["error"]["message"]


def test_anthropic_unknown_model(ant):
    with pytest.raises(anthropic.NotFoundError) as exc:
        ant.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "not_found_error"
