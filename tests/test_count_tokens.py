"""``POST /v1/messages/count_tokens`` (Anthropic's; Claude Code asks it every turn), end to end:
a real gateway in front of the project's mock upstream, with a gateway key.

An Anthropic or Gemini deployment's count is its upstream's (the mock counts a word a token); any
other's, or one whose upstream cannot count, is the gateway's estimate (the prompt's text and its tools'
definitions, four characters a token), no upstream asked. No limit is drawn; counted under
``deployment=""`` as ``/v1/models`` is; errors in Anthropic's shape (401, 403, 404, 400).
"""
from __future__ import annotations

import json
import textwrap
import urllib.request

import anthropic
import pytest

from procs import http_json, metric_value, metrics_text, start_gateway_proc, start_mock

KEY, OTHER_KEY, FREE_KEY = "sk-gw-count-1f2e", "sk-gw-count-other-9a8b", "sk-gw-count-free-5c6d"
ADMIN = {"Authorization": "Bearer adm-count-key"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("count")
    upstream = start_mock(workdir)
    config = textwrap.dedent(f"""
        [server]
        admin_key = {{ value = "{ADMIN["Authorization"][7:]}" }}
        [[keys]]
        name = "free"
        key = {{ value = "{FREE_KEY}" }}
        [[keys]]
        name = "team"
        key = {{ value = "{KEY}" }}
        rpm = 1
        [[keys]]
        name = "other"
        key = {{ value = "{OTHER_KEY}" }}
        models = ["oa"]
    """) + "".join(textwrap.dedent(f"""
        [[deployments]]
        name = "{name}"
        provider = "{provider}"
        routing = "{"latency" if name == "an-latency" else "least_loaded"}"
        retry = {{ max_attempts = 1 }}
        {more}
        [[deployments.replicas]]
        base_url = "{upstream.base}{path}"
        credential = {{ value = "sk-{name}" }}
    """) for name, provider, path, more in (
        ("an", "anthropic", "/v1", ""), ("oa", "openai_compatible", "/v1", ""), ("ge", "gemini", "/v1beta", ""),
        ("an-proxy", "anthropic", "/no-count/v1", ""), ("an-latency", "anthropic", "/v1", ""),
        ("an-estimate", "anthropic", "/v1", 'count_tokens = "estimate"'),
        ("oa-vllm", "openai_compatible", "/v1", 'count_tokens = "upstream"'),
        ("oa-vllm-without", "openai_compatible", "/no-tokenize/v1", 'count_tokens = "upstream"')))
    gateway = start_gateway_proc(workdir, config, workers=1)
    yield gateway, upstream
    gateway.stop()
    upstream.kill()
    assert "Traceback" not in gateway.stderr(), gateway.stderr()[-3000:]


def _count(gateway, body, key=KEY, query=""):
    return http_json("POST", f"{gateway.base}/v1/messages/count_tokens{query}", body, headers={"x-api-key": key})


def _body(model: str, text: str = "hello there", **more) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **more}


def test_an_anthropic_deployment_answers_its_upstreams_count(edge):
    gateway, upstream = edge
    before = len(upstream.received())
    body = _body("an", "one two three four five", system="be brief")
    status, _, answer = _count(gateway, body, query="?beta=true")
    assert status == 200 and answer == {"input_tokens": 7}, answer      # the mock's: a word a token
    [asked] = upstream.received()[before:]
    assert asked["path"] == "/v1/messages/count_tokens"
    assert asked["body"] == {**body, "model": "an"}          # as written: no max_tokens added, no key
    assert asked["headers"]["x-api-key"] == "sk-an" and KEY not in json.dumps(asked)


def test_the_gateways_own_fields_are_not_sent_to_the_upstream_that_counts(edge):
    """``priority`` is the gateway's (read as the Messages route reads it), never the upstream's."""
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _count(gateway, _body("an", "a b", priority="high"))
    assert status == 200 and answer == {"input_tokens": 2}, answer
    [asked] = upstream.received()[before:]
    assert asked["body"] == {**_body("an", "a b")}, asked["body"]
    status, _, answer = _count(gateway, _body("an", "a b", priority="urgent"))
    assert status == 400 and "priority" in answer["error"]["message"], answer


def test_a_gemini_deployment_answers_its_upstreams_count_of_the_whole_request(edge):
    gateway, upstream = edge
    before = len(upstream.received())
    body = _body("ge", "one two three four five", system="be brief")
    status, _, answer = _count(gateway, body)
    assert status == 200 and answer == {"input_tokens": 7}, answer
    [asked] = upstream.received()[before:]
    assert asked["path"] == "/v1beta/models/ge:countTokens"
    whole = asked["body"]["generateContentRequest"]           # the system instruction counted too
    assert whole["model"] == "models/ge" and whole["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert whole["contents"] == [{"role": "user", "parts": [{"text": "one two three four five"}]}]


def test_what_gemini_cannot_be_sent_is_counted_by_the_estimate(edge):
    """A document by URL has no place in Gemini's request (the Messages route refuses it): counted."""
    gateway, upstream = edge
    before = len(upstream.received())
    body = {"model": "ge", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * 400},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]}
    status, _, answer = _count(gateway, body)
    assert status == 200 and answer == {"input_tokens": 100}, answer
    assert len(upstream.received()) == before


def test_an_upstream_that_cannot_count_is_answered_by_the_estimate(edge):
    """An Anthropic-compatible server without the route (the mock's 404 here): the estimate."""
    gateway, _ = edge
    status, _, answer = _count(gateway, _body("an-proxy", "x" * 400))
    assert status == 200 and answer == {"input_tokens": 100}, answer
    assert _upstream_requests(gateway, "an-proxy") == 1       # it was asked, once


def _upstream_requests(gateway, deployment: str) -> float:
    asked = [line for line in metrics_text(gateway).splitlines()
             if line.startswith(f'fastinfer_upstream_requests_total{{deployment="{deployment}"')]
    return sum(float(line.rsplit(" ", 1)[1]) for line in asked)


def test_a_compatible_server_counts_with_vllms_tokenize_when_the_deployment_says_so(edge):
    """``count_tokens = "upstream"`` on an ``openai_compatible`` deployment: vLLM's ``POST /tokenize``
    at the server's root (its ``base_url`` without ``/v1``), of the request as it would be translated."""
    gateway, upstream = edge
    before = len(upstream.received())
    tools = [{"name": "read_file", "description": "Read a file",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    status, _, answer = _count(gateway, _body("oa-vllm", "one two three four five", system="be brief", tools=tools))
    assert status == 200 and answer == {"input_tokens": 7}, answer      # the mock's: a word a token
    [asked] = upstream.received()[before:]
    assert asked["path"] == "/tokenize"
    assert asked["headers"]["authorization"] == "Bearer sk-oa-vllm" and KEY not in json.dumps(asked)
    assert asked["body"] == {
        "model": "oa-vllm", "add_generation_prompt": True,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three four five"}],
        "tools": [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                                    "parameters": tools[0]["input_schema"]}}]}, asked["body"]


def test_a_compatible_server_without_tokenize_is_answered_by_the_estimate(edge):
    """A server without the route (Ollama, llama.cpp: the mock's 404 here) was asked, once: the estimate."""
    gateway, _ = edge
    status, _, answer = _count(gateway, _body("oa-vllm-without", "x" * 400))
    assert status == 200 and answer == {"input_tokens": 100}, answer
    assert _upstream_requests(gateway, "oa-vllm-without") == 1


@pytest.mark.parametrize("model", ["oa", "an-estimate"])
def test_any_other_deployment_answers_the_estimate_without_asking_its_upstream(edge, model):
    gateway, upstream = edge
    before = len(upstream.received())
    counts = []
    for text in ("hi", "a longer question " * 40):
        status, headers, answer = _count(gateway, _body(model, text), query="?beta=true")   # as Claude Code asks
        assert status == 200, answer
        assert set(answer) == {"input_tokens"} and headers["x-request-id"]
        counts.append(answer["input_tokens"])
    assert 0 < counts[0] < counts[1] and counts[1] == pytest.approx(len("a longer question " * 40) / 4, rel=0.05)
    tools = [{"name": "read_file", "description": "Read a file " * 50,
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    status, _, with_tools = _count(gateway, _body(model, "hi", tools=tools,
                                                   system=[{"type": "text", "text": "You are terse."}]))
    assert status == 200 and with_tools["input_tokens"] > counts[0] + len(json.dumps(tools)) // 5
    assert len(upstream.received()) == before          # no upstream asked


def test_counting_draws_no_limit_and_is_counted_apart_from_the_deployment(edge):
    """The key may send one request a minute (rpm 1): counting many times never spends it."""
    gateway, _ = edge
    unnamed, deployment = 'fastinfer_requests_total{deployment="",code="200"}', \
        'fastinfer_requests_total{deployment="an",code="200"}'
    text = metrics_text(gateway)
    before = metric_value(text, unnamed) if unnamed in text else 0.0
    served = metric_value(text, deployment) if deployment in text else 0.0
    for _ in range(5):
        assert _count(gateway, _body("an"))[0] == 200
    text = metrics_text(gateway)
    assert metric_value(text, unnamed) == before + 5
    assert deployment not in text or metric_value(text, deployment) == served
    status, _, answer = http_json("POST", f"{gateway.base}/v1/messages", _body("an", max_tokens=5),
                                  headers={"x-api-key": KEY})
    assert status == 200, answer         # the key's one request a minute is still there


def test_a_count_does_not_feed_the_replicas_latency_average(edge):
    """``routing = "latency"`` sends generations where answers come fastest: a count, answered without
    generating, says nothing of that (Claude Code counts before every turn)."""
    gateway, upstream = edge

    def latency_average() -> float:
        status, _, state = http_json("GET", gateway.base + "/admin/state", headers=ADMIN)
        assert status == 200, state
        [replica] = next(d for d in state["deployments"] if d["name"] == "an-latency")["replicas"]
        return replica["latency_ewma_s"]

    before = len(upstream.received())
    for _ in range(3):
        status, _, answer = _count(gateway, _body("an-latency"), key=FREE_KEY)
        assert status == 200 and answer == {"input_tokens": 2}, answer
    assert [e["path"] for e in upstream.received()[before:]] == ["/v1/messages/count_tokens"] * 3
    assert latency_average() == 0.0
    status, _, answer = http_json("POST", f"{gateway.base}/v1/messages", _body("an-latency", max_tokens=5),
                                  headers={"x-api-key": FREE_KEY})
    assert status == 200, answer
    assert latency_average() > 0.0        # an answer does


@pytest.mark.parametrize("key, body, status, words", [
    (None, _body("an"), 401, "Missing API key"),
    ("sk-not-a-key", _body("an"), 401, ""),
    (OTHER_KEY, _body("an"), 403, "may not use the model `an`"),
    (KEY, _body("nope"), 404, "`nope`"),
    (KEY, {"model": "an"}, 400, "messages"),
    (KEY, _body("an", tools=[{"description": "no name"}]), 400, "tools.0.name"),
])
def test_refusals_come_in_anthropics_shape(edge, key, body, status, words):
    gateway, _ = edge
    headers = {} if key is None else {"x-api-key": key}
    got, _, answer = http_json("POST", f"{gateway.base}/v1/messages/count_tokens", body, headers=headers)
    assert got == status, answer
    assert answer["type"] == "error" and set(answer["error"]) == {"type", "message"}, answer
    assert words in answer["error"]["message"], answer


def test_malformed_json_is_a_400_in_anthropics_shape(edge):
    gateway, _ = edge
    got, _, answer = http_json("POST", f"{gateway.base}/v1/messages/count_tokens", b"{not json",
                               headers={"x-api-key": KEY})
    assert got == 400 and answer["type"] == "error", answer


def test_the_anthropic_sdk_counts_through_the_gateway(edge):
    gateway, _ = edge
    with anthropic.Anthropic(base_url=gateway.base, api_key=KEY, max_retries=0, timeout=20) as client:
        counted = client.messages.count_tokens(model="oa", messages=[{"role": "user", "content": "x" * 400}])
        beta = client.beta.messages.count_tokens(model="an", messages=[{"role": "user", "content": "a b c"}])
    assert (counted.input_tokens, beta.input_tokens) == (100, 3)


def test_only_post_is_served(edge):
    gateway, _ = edge
    request = urllib.request.Request(f"{gateway.base}/v1/messages/count_tokens", method="GET",
                                     headers={"x-api-key": KEY})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("a GET was answered")
    except urllib.error.HTTPError as e:
        assert e.code == 405
