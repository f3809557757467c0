"""Formats and providers without a server: the registry, error bodies and events, upstream bodies,
and what each provider puts on the wire (URL, auth, fixed headers)."""
from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from fastinfer._core.sse import SSEParser
from fastinfer.config import ConfigError, parse_config
from fastinfer.errors import (BadRequest, BodyTooLarge, GatewayError, Overloaded, Unauthorized, UnknownModel,
                             UpstreamTimeout)
from fastinfer.formats import ANTHROPIC, FORMATS, GEMINI, OPENAI
from fastinfer.providers import PROVIDERS, make_provider

DEPLOYMENT = SimpleNamespace(upstream_model="up-model", default_max_tokens=321, drop_params=False,
                             takes_every_param=True)


def req(api: str, body: dict, stream: bool = False):
    return SimpleNamespace(api=api, body=body, stream=stream, client_wants_usage=False, endpoint="chat")


def test_the_registry_names_each_format_by_its_caller_api():
    assert FORMATS == {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI}
    assert OPENAI.endpoints == ("chat", "completions", "embeddings")
    assert ANTHROPIC.endpoints == GEMINI.endpoints == ("chat",)    # counts: the provider table's


def test_error_bodies_and_events_in_each_format():
    err = BadRequest("max_tokens: must be at least 1.", param="max_tokens")
    assert orjson.loads(OPENAI.error_body(err)) == {"error": {
        "message": "max_tokens: must be at least 1.", "type": "invalid_request_error", "code": None,
        "param": "max_tokens"}}
    assert orjson.loads(ANTHROPIC.error_body(err)) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: must be at least 1."}}
    timeout = UpstreamTimeout("upstream did not answer within 2s")
    assert orjson.loads(GEMINI.error_body(timeout)) == {"error": {
        "code": 504, "message": "upstream did not answer within 2s", "status": "DEADLINE_EXCEEDED"}}
    for fmt, event_name in ((OPENAI, "message"), (ANTHROPIC, "error"), (GEMINI, "message")):
        (event,) = SSEParser().feed(fmt.error_event(err))
        # the event carries the very body the whole answer would: built in one place per format
        assert event.event == event_name and event.data == fmt.error_body(err)


@pytest.mark.parametrize("err, openai_type, anthropic_type", [
    (UnknownModel("The model `x` does not exist."), "invalid_request_error", "not_found_error"),
    (BodyTooLarge("Request body of 9 bytes exceeds the limit of 8 bytes."), "invalid_request_error",
     "request_too_large"),
    # an upstream's 404 and 413, classified in Anthropic's words (``engine.classify``)
    (GatewayError("no such model", status=404, type="not_found_error", code="model_not_found"),
     "invalid_request_error", "not_found_error"),
    (GatewayError("too big", status=413, type="request_too_large", code="request_too_large"),
     "invalid_request_error", "request_too_large"),
    (BadRequest("x"), "invalid_request_error", "invalid_request_error"),
    (GatewayError("a 405", status=405, type="invalid_request_error"), "invalid_request_error", "invalid_request_error"),
    (Unauthorized("Invalid API key."), "authentication_error", "authentication_error"),
    (Overloaded("queue full"), "overloaded_error", "overloaded_error"),
])
def test_each_api_names_an_error_in_its_own_words(err, openai_type, anthropic_type):
    """The gateway names its errors in OpenAI's words, upstream errors are classified in Anthropic's:
    each caller reads its API's type for the status (a 404 is Anthropic's ``not_found_error``, a 413
    its ``request_too_large``; OpenAI calls both ``invalid_request_error``), in a whole answer and in a
    stream's error event, and the code stays."""
    openai_body = orjson.loads(OPENAI.error_body(err))["error"]
    assert openai_body["type"] == openai_type and openai_body["code"] == err.code
    assert orjson.loads(ANTHROPIC.error_body(err))["error"]["type"] == anthropic_type
    (event,) = SSEParser().feed(ANTHROPIC.error_event(err))
    assert orjson.loads(event.data)["error"]["type"] == anthropic_type


@pytest.mark.parametrize("caller, upstream", [(c, u) for c in ("openai", "anthropic")
                                              for u in ("openai", "anthropic", "gemini")])
def test_upstream_bodies_for_every_caller(caller, upstream):
    messages = [{"role": "user", "content": "hello"}]
    body = {"model": "client-name", "messages": messages, "stream": True}
    if caller == "anthropic":
        body["max_tokens"] = 50
    out = FORMATS[upstream].upstream_body(req(caller, dict(body), stream=True), FORMATS[caller], DEPLOYMENT)
    if upstream == "gemini":
        assert out["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}] and "model" not in out
        return
    assert out["model"] == "up-model" and out["stream"] is True
    if upstream == "openai":
        assert out["stream_options"] == {"include_usage": True}   # accounting needs usage on every stream
    else:
        assert out["max_tokens"] == (50 if caller == "anthropic" else 321)   # required by Anthropic


@pytest.mark.parametrize("stream", [True, False])
def test_an_openai_callers_body_to_openai_is_a_copy_with_its_model_and_on_a_stream_usage_asked_for(stream):
    body = {"model": "client-name", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            "stream_options": {"include_usage": False, "other": 1}}
    sent = {**body, "stream_options": dict(body["stream_options"])}
    out = OPENAI.upstream_body(req("openai", body, stream=stream), OPENAI, DEPLOYMENT)
    assert body == sent and out is not body                  # the client's body is not changed
    assert out["model"] == "up-model" and out["messages"] == body["messages"]
    assert out["stream_options"] == ({"include_usage": True, "other": 1} if stream else body["stream_options"])


def test_an_anthropic_callers_body_passes_through_to_anthropic_with_a_default_max_tokens():
    body = {"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "top_k": 5}
    out = ANTHROPIC.upstream_body(req("anthropic", body), ANTHROPIC, DEPLOYMENT)
    assert out == {**body, "model": "up-model", "max_tokens": 321} and "max_tokens" not in body


@pytest.mark.parametrize("name, endpoint, stream, url, headers", [
    ("openai", "chat", False, "https://u.example/v1/chat/completions", {"Authorization": "Bearer K"}),
    ("openai_compatible", "embeddings", False, "https://u.example/v1/embeddings", {"Authorization": "Bearer K"}),
    ("azure_openai", "completions", True,
     "https://u.example/v1/openai/deployments/up-model/completions?api-version=2024-06-01", {"api-key": "K"}),
    ("anthropic", "chat", True, "https://u.example/v1/messages",
     {"x-api-key": "K", "anthropic-version": "2023-06-01"}),
    ("anthropic", "count_tokens", False, "https://u.example/v1/messages/count_tokens",
     {"x-api-key": "K", "anthropic-version": "2023-06-01"}),
    ("gemini", "chat", True, "https://u.example/v1/models/up-model:streamGenerateContent?alt=sse",
     {"x-goog-api-key": "K"}),
    ("gemini", "chat", False, "https://u.example/v1/models/up-model:generateContent", {"x-goog-api-key": "K"}),
    ("gemini", "count_tokens", False, "https://u.example/v1/models/up-model:countTokens", {"x-goog-api-key": "K"}),
    ("openai_compatible", "count_tokens", False, "https://u.example/tokenize", {"Authorization": "Bearer K"}),
])
def test_each_provider_is_a_url_an_auth_header_and_a_format(name, endpoint, stream, url, headers):
    kind = PROVIDERS[name]
    replica = SimpleNamespace(base_url="https://u.example/v1", api_version="2024-06-01")
    assert kind.url(replica, "up-model", endpoint, stream) == url
    assert kind.request_headers("K") == {"Content-Type": "application/json", **headers}
    assert "api-key" not in str(kind.request_headers(None)).lower()     # no credential, no auth header
    assert kind.format is (GEMINI if name == "gemini" else ANTHROPIC if name == "anthropic" else OPENAI)


def test_vllms_tokenize_is_at_the_root_of_a_base_url_without_v1():
    url = PROVIDERS["openai_compatible"].url
    assert url(SimpleNamespace(base_url="http://h:8000/vllm"), "m", "count_tokens", False) == "http://h:8000/vllm/tokenize"
    assert url(SimpleNamespace(base_url="http://h:8000/v1"), "m", "chat", False) == "http://h:8000/v1/chat/completions"


@pytest.mark.parametrize("provider, configured, asks", [
    ("anthropic", None, True), ("anthropic", "upstream", True), ("anthropic", "estimate", False),
    ("gemini", None, True), ("gemini", "estimate", False),
    ("openai_compatible", None, False), ("openai_compatible", "upstream", True), ("openai_compatible", "estimate", False),
    ("openai", None, False), ("mock", None, False),
])
def test_a_deployment_asks_its_upstream_to_count_where_its_api_counts_and_the_config_lets_it(provider, configured, asks):
    deployment = {"name": "d", "provider": provider}
    if provider != "mock":
        deployment["replicas"] = [{"base_url": "http://127.0.0.1:9/v1", "credential": {"value": "k"}}]
    if configured:
        deployment["count_tokens"] = configured
    config = parse_config({"deployments": [deployment]})
    endpoints = make_provider(config.deployments[0]).endpoints
    assert ("count_tokens" in endpoints) == asks
    assert "chat" in endpoints


def test_the_config_takes_providers_and_their_needs_from_the_provider_table():
    def deployment(provider: str, **replica) -> dict:
        return {"deployments": [{"name": "d", "provider": provider, "model": "m", "replicas": [replica]}]}
    assert set(PROVIDERS) == {"openai", "openai_compatible", "azure_openai", "anthropic", "gemini", "mock"}
    for name, kind in PROVIDERS.items():
        if kind.default_base_url:   # the official endpoint when the config names no replica
            config = parse_config({"deployments": [{"name": "d", "provider": name, "model": "m"}]})
            assert config.deployments[0].replicas[0].base_url == kind.default_base_url
    with pytest.raises(ConfigError) as e:
        parse_config(deployment("azure_openai", base_url="https://a.example"))
    assert e.value.problems == ["deployments[0].replicas[0].api_version: is required for azure_openai"]
    config = parse_config({"deployments": [{"name": "d", "provider": "mock"}]})
    assert PROVIDERS["mock"].in_process and make_provider(config.deployments[0]).format is OPENAI


@pytest.mark.parametrize("usage, expected", [
    ({"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
     {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}),
    ({"prompt_tokens": 12, "completion_tokens": 8, "prompt_tokens_details": {"cached_tokens": 4},
      "completion_tokens_details": {"reasoning_tokens": 3}},
     {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20, "cached_tokens": 4, "reasoning_tokens": 3}),
    # what is not an integer counts 0: a bool, a float, a string; details that are not objects are none
    ({"prompt_tokens": True, "completion_tokens": 2.5, "prompt_tokens_details": {"cached_tokens": "4"},
      "completion_tokens_details": [1]},
     {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
    ({}, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
    (None, None), ([12, 8], None),
])
def test_openai_usage_is_normalized_and_anything_not_a_count_is_zero(usage, expected):
    assert OPENAI.reply_usage({"usage": usage} if usage is not None else {}) == expected


_ANTHROPIC_REPLY = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                    "content": [{"type": "text", "text": "hello there"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 2}}


@pytest.mark.parametrize("body", [
    orjson.dumps(_ANTHROPIC_REPLY),                                                  # scanned: only its usage parsed
    orjson.dumps({**_ANTHROPIC_REPLY, "content": [{"type": "text", "text": "caf\u00e9"}]}),  # past ASCII: parsed whole
    orjson.dumps({k: v for k, v in _ANTHROPIC_REPLY.items() if k != "usage"}),      # no usage: the text estimated
    orjson.dumps({**_ANTHROPIC_REPLY, "usage": {"input_tokens": 0, "output_tokens": 0}}),
    orjson.dumps({**_ANTHROPIC_REPLY, "usage": "seven"}),
])
def test_an_anthropic_reply_to_an_anthropic_caller_reads_as_parsing_it_whole(body):
    """The passthrough's usage, found by the compiled scan when it is sure, is what parsing the whole
    reply gives (``Format.reply``), estimates included; the body goes as it came."""
    from fastinfer.formats.base import Format
    r = req("anthropic", {"messages": [{"role": "user", "content": "say hello"}], "max_tokens": 10})
    assert ANTHROPIC.reply(body, r, ANTHROPIC, "claude") == Format.reply(ANTHROPIC, body, r, ANTHROPIC, "claude")
    assert ANTHROPIC.reply(body, r, ANTHROPIC, "claude")[0] is body


def test_a_plain_anthropic_reply_is_scanned_not_parsed():
    from fastinfer._core.bodies import reply_usage_span
    body = orjson.dumps(_ANTHROPIC_REPLY)
    start, end = reply_usage_span(body)
    assert orjson.loads(body[start:end]) == _ANTHROPIC_REPLY["usage"]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"usage": {"input_tokens": 1}', b'{"a":1}x'])
def test_an_anthropic_reply_that_is_not_a_json_object_fails_the_attempt(body):
    from fastinfer.errors import UpstreamFailure
    r = req("anthropic", {"messages": [], "max_tokens": 10})
    with pytest.raises(UpstreamFailure):
        ANTHROPIC.reply(body, r, ANTHROPIC, "claude")


@pytest.mark.parametrize("provider, drop, sent", [("openai", False, None), ("azure_openai", False, None),
                                                  ("azure_openai", True, {}), ("openai_compatible", False, 5),
                                                  ("mock", False, 5)])
def test_an_anthropic_callers_top_k_to_an_openai_format_upstream(provider, drop, sent):
    """OpenAI's own API (and Azure's) has no ``top_k``: refused by name, or left out with
    ``drop_params``; a compatible server (vLLM, SGLang) and the mock take it."""
    deployment = SimpleNamespace(upstream_model="m", default_max_tokens=1, drop_params=drop,
                                 takes_every_param=PROVIDERS[provider].takes_every_param)
    body = {"model": "x", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "top_k": 5}
    if sent is None:
        with pytest.raises(BadRequest) as refused:
            OPENAI.upstream_body(req("anthropic", body), ANTHROPIC, deployment)
        assert (refused.value.param, refused.value.code) == ("top_k", "unsupported_parameter")
        return
    out = OPENAI.upstream_body(req("anthropic", body), ANTHROPIC, deployment)
    assert out.get("top_k", {}) == sent and body["top_k"] == 5     # the caller's body is not changed


def test_a_count_goes_to_a_compatible_server_as_vllms_tokenize_of_the_translated_chat():
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "system": "s",
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    count = SimpleNamespace(api="anthropic", body=body, stream=False, client_wants_usage=False, endpoint="count_tokens")
    deployment = DEPLOYMENT
    assert OPENAI.upstream_body(count, ANTHROPIC, deployment) == {
        "model": "up-model", "add_generation_prompt": True,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    assert "tools" not in OPENAI.upstream_body(SimpleNamespace(**{**vars(count), "body": {**body, "tools": []}}),
                                               ANTHROPIC, deployment)
    assert OPENAI.counted({"count": 12, "max_model_len": 4096, "tokens": []}) == 12


def test_a_count_goes_to_anthropic_as_the_caller_wrote_it_without_max_tokens():
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "system": "s"}
    count = SimpleNamespace(api="anthropic", body=body, stream=False, client_wants_usage=False, endpoint="count_tokens")
    assert ANTHROPIC.upstream_body(count, ANTHROPIC, DEPLOYMENT) == {**body, "model": "up-model"}
    assert ANTHROPIC.upstream_body(req("anthropic", body), ANTHROPIC, DEPLOYMENT)["max_tokens"] == 321
