"""The OpenAI API through fastinfer, with the official ``openai`` SDK as the client.

Topology: openai SDK -> fastinfer serve (2 workers) -> mock-upstream.
"""
from __future__ import annotations

import time

import openai
import pytest

from conftest import upstream_config
from procs import http_json


@pytest.fixture
def gateway(start_gateway, mock_upstream):
    return start_gateway(upstream_config(mock_upstream.base))


@pytest.fixture
def client(gateway):
    # closed before the gateway stops: a draining gateway keeps idle connections until drain_grace_s ends
    with openai.OpenAI(base_url=gateway.base + "/v1", api_key="sk-client-key", max_retries=0, timeout=20) as c:
        yield c


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "alpha beta gamma"}]


def test_non_streaming_answer_and_usage(client, mock_upstream):
    mock_upstream.control(tokens=5)
    resp = client.chat.completions.create(model="m", messages=MESSAGES)
    assert resp.choices[0].message.content == "alpha beta gamma alpha beta "
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 5
    assert resp.usage.prompt_tokens == 5  # "be brief" + "alpha beta gamma"
    # the upstream got its own model id and the replica's credential, never the client's key
    received = mock_upstream.stats()["received"][-1]
    assert received["body"]["model"] == "mock-model"
    assert received["headers"]["authorization"] == "Bearer sk-replica-secret"
    assert "sk-client-key" not in str(received["headers"])


def test_streaming_without_usage(client, mock_upstream):
    mock_upstream.control(tokens=7)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma alpha beta gamma alpha "
    assert chunks[-1].choices[0].finish_reason == "stop"
    # the gateway asked the upstream for usage, and did not pass the extra chunk on
    assert all(c.usage is None for c in chunks)
    assert mock_upstream.stats()["received"][-1]["body"]["stream_options"] == {"include_usage": True}


def test_streaming_with_include_usage(client, mock_upstream):
    mock_upstream.control(tokens=4)
    chunks = list(client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.total_tokens == 4 + 5


def test_stream_is_forwarded_as_it_arrives(client, mock_upstream):
    """With 150 ms between upstream chunks, the first token reaches the SDK long before the last."""
    mock_upstream.control(tokens=6, itl_ms=150)
    t0 = time.monotonic()
    arrivals = []
    for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 6
    # buffering would deliver everything at once; here each token is ~150 ms after the previous
    assert arrivals[-1] - arrivals[0] >= 0.5


def test_models_lists_deployments(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["m"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert exc.value.status_code == 404
    assert exc.value.body["code"] == "model_not_found"
    assert "no-such-model" in exc.value.body["message"]


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": "hello"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": 7, "messages": MESSAGES}, "model"),
    ({"model": "m", "messages": MESSAGES, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": MESSAGES, "max_tokens": "10"}, "max_tokens"),
    ({"model": "m", "messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": [{"content": "no role"}]}, "messages[0]"),
])
def test_wrong_types_are_400(gateway, body, param):
    status, headers, answer = http_json("POST", gateway.base + "/v1/chat/completions", body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param


def test_wrong_types_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens="ten")
    assert exc.value.body["param"] == "max_tokens"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe"])
def test_malformed_json_is_400(gateway, raw):
    status, _, answer = http_json("POST", gateway.base + "/v1/chat/completions", raw)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(client, gateway):
    huge = "x" * 70_000  # the test config allows 65536 bytes
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": huge}])
    assert exc.value.status_code == 413
    assert exc.value.body["code"] == "request_too_large"
    # and the gateway keeps serving
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices


def test_request_id_kept_or_generated(client, gateway):
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers={"x-request-id": "trace-abc-123"})
    assert raw.headers["x-request-id"] == "trace-abc-123"
    assert raw.headers["x-fastinfer-attempts"] == "1"
    assert raw.headers["x-fastinfer-replica"] == "r0"
    assert float(raw.headers["x-fastinfer-overhead-ms"]) >= 0
    generated = {client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
                 .headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3 and all(generated)
    # errors carry it too
    status, headers, _ = http_json("POST", gateway.base + "/v1/chat/completions", b"{",
                                   headers={"x-request-id": "bad-one"})
    assert status == 400 and headers["x-request-id"] == "bad-one"


def test_unknown_route_is_openai_shaped_404(gateway):
    status, _, answer = http_json("GET", gateway.base + "/v1/nothing-here")
    assert status == 404
    assert answer["error"]["code"] == "unknown_url"


def test_an_unknown_route_under_v1_messages_is_an_anthropic_shaped_404(gateway):
    """docs/http-api.md (Routes): an Anthropic client's mistyped path gets Anthropic's error shape."""
    status, _, answer = http_json("POST", gateway.base + "/v1/messages/nothing-here", {})
    assert status == 404
    assert answer["type"] == "error" and answer["error"]["type"] == "not_found_error"


def test_health_and_readiness(gateway):
    assert http_json("GET", gateway.base + "/healthz")[0] == 200
    assert http_json("GET", gateway.base + "/readyz")[0] == 200


def test_upstream_client_error_passes_through(client, mock_upstream):
    mock_upstream.script([{"status": 400, "message": "context too long for mock"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert "context too long for mock" in exc.value.body["message"]


def test_tokens_and_cost_are_counted(start_gateway, mock_upstream):
    config = upstream_config(mock_upstream.base,
                             price="{ input_per_mtok = 2.0, output_per_mtok = 10.0 }")
    gw = start_gateway(config)
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    mock_upstream.control(tokens=6)
    client.chat.completions.create(model="m", messages=MESSAGES)                 # 5 in, 6 out
    list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))  # 5 in, 6 out
    import urllib.request
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'fastinfer_tokens_total{deployment="m",direction="input"} 10' in text
    assert 'fastinfer_tokens_total{deployment="m",direction="output"} 12' in text
    cost = float(text.split('fastinfer_cost_usd_total{deployment="m"} ')[1].split()[0])
    assert cost == pytest.approx((10 * 2.0 + 12 * 10.0) / 1e6)


def test_azure_openai_deployment_url_version_and_api_key(start_gateway, mock_upstream):
    config = f"""
        [[deployments]]
        name = "az"
        provider = "azure_openai"
        model = "gpt4o-prod"

        [[deployments.replicas]]
        base_url = "{mock_upstream.base}"
        api_version = "2024-06-01"
        credential = {{ value = "azure-key" }}
    """
    mock_upstream.control(api_keys=["azure-key"])
    gw = start_gateway(config)
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="client-key", max_retries=0, timeout=20)
    assert client.chat.completions.create(model="az", messages=MESSAGES).choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="az", messages=MESSAGES, stream=True) if c.choices)
    for received in mock_upstream.stats()["received"]:
        assert received["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
        assert received["query"] == {"api-version": "2024-06-01"}
        assert received["headers"]["api-key"] == "azure-key"
        assert "authorization" not in received["headers"]


def test_priority_body_field_is_read_and_never_forwarded(client, mock_upstream, gateway):
    client.chat.completions.create(model="m", messages=MESSAGES, extra_body={"priority": "high"})
    assert "priority" not in mock_upstream.stats()["received"][-1]["body"]
    status, _, body = http_json("POST", gateway.base + "/v1/chat/completions",
                                {"model": "m", "messages": MESSAGES, "priority": "urgent"})
    assert status == 400 and body["error"]["param"] == "priority"
