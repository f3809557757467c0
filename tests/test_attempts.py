"""The attempt loop against a misbehaving upstream, with the openai SDK as the client."""
from __future__ import annotations

import json
import textwrap
import time

import urllib.request
import openai
import pytest

from procs import http_json, metric_value, metrics_text

MESSAGES = [{"role": "user", "content": "hello world"}]


def deployment(name: str, base: str, *, replicas: int = 1, **options) -> str:
    extra = "\n".join(f"{k} = {v}" for k, v in options.items())
    text = f"""
        [[deployments]]
        name = "{name}"
        provider = "openai_compatible"
        model = "mock-model"
        {extra}
    """
    for _ in range(replicas):
        text += f"""
        [[deployments.replicas]]
        base_url = "{base}/v1"
        """
    return textwrap.dedent(text)


def sdk(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=kw.pop("timeout", 20))


FAST_RETRY = 'retry = { max_attempts = 3, base_ms = 10, max_ms = 50, jitter = "full" }'


def test_500_500_200_is_answered_200_after_3_attempts(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.script([{"status": 500}, {"status": 500}])
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-fastinfer-attempts"] == "3"
    assert raw.parse().choices[0].message.content
    assert mock_upstream.stats()["requests"] == 3


def test_429_retry_after_is_waited(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.script([{"status": 429, "headers": {"Retry-After": "1"}}])
    t0 = time.monotonic()
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert time.monotonic() - t0 >= 1.0
    assert raw.headers["x-fastinfer-attempts"] == "2"
    received = mock_upstream.stats()["received"]
    assert received[1]["t"] - received[0]["t"] >= 1.0


def test_400_is_passed_on_unretried_with_the_upstream_message(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.script([{"status": 400, "message": "temperature must be <= 2"}])
    with pytest.raises(openai.BadRequestError) as exc:
        sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
    assert "temperature must be <= 2" in exc.value.message
    assert mock_upstream.stats()["requests"] == 1


def test_a_failing_replica_is_skipped(start_gateway, mock_upstream, workdir):
    """Replica r0 points at a port nobody listens on; every request still succeeds on r1."""
    import socket
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    config = deployment("m", mock_upstream.base, routing='"round_robin"', retry=FAST_RETRY.split("= ", 1)[1],
                        circuit_breaker="{ failure_threshold = 2, open_s = 60 }")
    config = config.replace(f'base_url = "{mock_upstream.base}/v1"',
                            f'base_url = "http://127.0.0.1:{dead_port}/v1"', 1)
    config += f'\n[[deployments.replicas]]\nbase_url = "{mock_upstream.base}/v1"\n'
    gw = start_gateway(config)
    client = sdk(gw)
    for _ in range(12):
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    text = metrics_text(gw)
    # the dead replica failed until its circuit opened (2 failures per worker at most), then was skipped
    failures = metric_value(text, 'fastinfer_upstream_requests_total{deployment="m",replica="r0",outcome="network_error"}')
    assert 2 <= failures <= 4
    assert metric_value(text, 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 1
    assert metric_value(text, 'fastinfer_upstream_requests_total{deployment="m",replica="r1",outcome="success"}') == 12


def test_fallback_is_used_when_the_deployment_cannot_serve(start_gateway, mock_upstream):
    config = deployment("primary", mock_upstream.base, retry="{ max_attempts = 2, base_ms = 10, max_ms = 20 }",
                        fallbacks='["backup"]') + deployment("backup", mock_upstream.base)
    gw = start_gateway(config)
    mock_upstream.script([{"status": 503}, {"status": 503}])
    raw = sdk(gw).chat.completions.with_raw_response.create(model="primary", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-fastinfer-deployment"] == "backup"
    assert metric_value(metrics_text(gw), 'fastinfer_fallbacks_total{deployment="primary",to="backup"}') == 1
    # the attempts are the request's: both of the primary's and the backup's, as the access log counts them
    assert raw.headers["x-fastinfer-attempts"] == "3"


def test_a_failed_fallback_counts_every_deployments_attempts(start_gateway, mock_upstream):
    config = deployment("primary", mock_upstream.base, retry="{ max_attempts = 2, base_ms = 10, max_ms = 20 }",
                        fallbacks='["backup"]') + deployment("backup", mock_upstream.base,
                                                             retry="{ max_attempts = 1 }")
    gw = start_gateway(config)
    mock_upstream.script([{"status": 503}, {"status": 503}, {"status": 503}])
    status, headers, _ = http_json("POST", gw.base + "/v1/chat/completions", {"model": "primary", "messages": MESSAGES})
    assert status == 503
    assert headers["x-fastinfer-attempts"] == "3"
    assert mock_upstream.stats()["requests"] == 3


def test_a_callers_deadline_never_opens_a_healthy_replicas_circuit(start_gateway, mock_upstream):
    """A client that asks for 100 ms of a replica answering in 300 gets its 504; the replica's circuit
    stays closed for everyone else (the timeout was the caller's, not the replica's), streams too."""
    gw = start_gateway(deployment("m", mock_upstream.base, retry="{ max_attempts = 1 }",
                                  circuit_breaker="{ failure_threshold = 2, open_s = 60 }",
                                  fallbacks='["backup"]') + deployment("backup", mock_upstream.base))
    mock_upstream.control(latency_ms=300)
    for stream in (False, False, True, True):
        status, _, _ = http_json("POST", gw.base + "/v1/chat/completions",
                                 {"model": "m", "messages": MESSAGES, "stream": stream},
                                 headers={"x-timeout-ms": "100"})
        assert status == 504
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_upstream_requests_total{deployment="m",replica="r0",outcome="timeout"}') == 4
    assert metric_value(text, 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 0
    # no time left for a fallback either: the backup was never asked
    assert metric_value(text, 'fastinfer_fallbacks_total{deployment="m",to="backup"}') == 0
    assert mock_upstream.stats()["requests"] == 4
    status, _, body = http_json("POST", gw.base + "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
    assert status == 200, body
    # the replica's own first-byte timeout still counts: with no deadline, it is the replica that was slow
    gw2 = start_gateway(deployment("m", mock_upstream.base, retry="{ max_attempts = 1 }",
                                   circuit_breaker="{ failure_threshold = 2, open_s = 60 }",
                                   timeouts="{ first_byte_s = 0.1 }"))
    for _ in range(2):
        status, _, _ = http_json("POST", gw2.base + "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
        assert status == 504
    assert metric_value(metrics_text(gw2), 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 1


def test_context_window_errors_go_only_to_context_window_fallbacks(start_gateway, mock_upstream):
    config = deployment("small", mock_upstream.base, fallbacks='["other"]',
                        context_window_fallbacks='["large"]') \
        + deployment("other", mock_upstream.base) + deployment("large", mock_upstream.base)
    gw = start_gateway(config)
    mock_upstream.script([{"status": 400, "code": "context_length_exceeded",
                           "message": "This model's maximum context length is 8192 tokens."}])
    raw = sdk(gw).chat.completions.with_raw_response.create(model="small", messages=MESSAGES)
    assert raw.headers["x-fastinfer-deployment"] == "large"


def test_content_filter_never_falls_back(start_gateway, mock_upstream):
    config = deployment("m", mock_upstream.base, fallbacks='["other"]') + deployment("other", mock_upstream.base)
    gw = start_gateway(config)
    mock_upstream.script([{"status": 400, "code": "content_filter", "message": "flagged by the content filter"}])
    with pytest.raises(openai.BadRequestError) as exc:
        sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
    assert "content filter" in exc.value.message
    assert mock_upstream.stats()["requests"] == 1


def test_a_cut_stream_raises_in_the_sdk_and_is_not_retried(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.script([{"cut_after": 3}])
    stream = sdk(gw).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    got = []
    with pytest.raises(Exception) as exc:
        for chunk in stream:
            got.append(chunk)
    assert isinstance(exc.value, openai.APIError) or "incomplete" in repr(exc.value).lower() \
        or "closed" in repr(exc.value).lower(), repr(exc.value)
    assert 1 <= len(got) <= 3
    assert mock_upstream.stats()["requests"] == 1


def test_a_cut_mid_stream_ends_with_an_error_event_and_no_done(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base))
    mock_upstream.script([{"cut_after": 4}])
    request = urllib.request.Request(gw.base + "/v1/chat/completions", method="POST",
                                     data=b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}',
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as resp:
        body = resp.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert b"[DONE]" not in body
    assert events[-1].startswith(b'data: {"error"')
    assert b"upstream" in events[-1]


def test_a_hanging_upstream_is_504_at_the_first_byte_timeout(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry="{ max_attempts = 1 }",
                                  timeouts="{ first_byte_s = 0.5 }"))
    mock_upstream.script([{"hang": True}])
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.status_code == 504
    assert "did not answer within 0.5s" in exc.value.message    # the first-byte limit, no other
    assert time.monotonic() - t0 >= 0.45


def test_x_timeout_ms_is_honoured(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.control(latency_ms=3000)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        sdk(gw).chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-timeout-ms": "400"})
    elapsed = time.monotonic() - t0
    assert exc.value.status_code == 504
    # ended by the request's deadline: before even one upstream answer (3 s), let alone 3 attempts of it
    # (the bound is that, not a speed: a loaded machine stretches 0.4 s, never to 3 s)
    assert 0.35 <= elapsed < 2.5
    status, _, body = http_json("POST", gw.base + "/v1/chat/completions",
                                {"model": "m", "messages": MESSAGES}, headers={"x-timeout-ms": "soon"})
    assert status == 400 and body["error"]["param"] == "x-timeout-ms"


def _raw_stream(gw) -> bytes:
    request = urllib.request.Request(gw.base + "/v1/chat/completions", method="POST",
                                     data=b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}',
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as resp:
        return resp.read()


def test_garbage_mid_stream_ends_with_an_error_event(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base))
    mock_upstream.script([{"garbage_at": 3}])
    body = _raw_stream(gw)
    events = [e for e in body.split(b"\n\n") if e]
    assert len(events) == 4  # role + 2 tokens, then the error event instead of the garbage
    assert b"not json" not in body and b"[DONE]" not in body
    assert events[-1].startswith(b'data: {"error"') and b"malformed" in events[-1]
    with pytest.raises(openai.APIError):  # and the SDK raises on it
        mock_upstream.script([{"garbage_at": 3}])
        list(sdk(gw).chat.completions.create(model="m", messages=MESSAGES, stream=True))


def test_an_idle_stream_ends_with_an_error_event_at_the_idle_timeout(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, timeouts="{ idle_s = 0.5 }"))
    mock_upstream.script([{"idle_after": 2}])
    t0 = time.monotonic()
    body = _raw_stream(gw)
    assert time.monotonic() - t0 >= 0.45        # not before the limit; after it, the error event says why
    assert b"[DONE]" not in body
    assert body.rstrip().split(b"\n\n")[-1].startswith(b'data: {"error"')
    assert b"idle" in body


def test_an_in_stream_upstream_error_reaches_the_sdk_without_done(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base))
    mock_upstream.script([{"stream_error_at": 2, "stream_error": {"error": {
        "message": "model overloaded mid-stream", "type": "server_error", "code": None}}}])
    with pytest.raises(openai.APIError) as exc:
        list(sdk(gw).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "overloaded mid-stream" in str(exc.value)
    assert mock_upstream.stats()["requests"] == 1   # after the first byte: never retried


def test_a_retry_prefers_another_replica(start_gateway, mock_upstream):
    """Two replicas on one mock, told apart by their credentials: the retry goes to the other one."""
    config = deployment("m", mock_upstream.base, replicas=2, routing='"round_robin"',
                        retry="{ max_attempts = 2, base_ms = 10, max_ms = 20 }")
    parts = config.split("[[deployments.replicas]]")
    config = parts[0] + "".join(f'[[deployments.replicas]]\ncredential = {{ value = "key-{i}" }}{p}'
                                for i, p in enumerate(parts[1:]))
    gw = start_gateway(config, workers=1)
    for _ in range(4):
        mock_upstream.script([{"status": 502}])
        raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.headers["x-fastinfer-attempts"] == "2"
        first, second = [r["headers"]["authorization"] for r in mock_upstream.stats()["received"][-2:]]
        assert first != second


def test_garbage_under_a_200_is_a_failed_attempt(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.script([{"body": "<html>502 Bad Gateway</html>"}])
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["x-fastinfer-attempts"] == "2"
    assert raw.parse().choices[0].message.content
    mock_upstream.script([{"body": "not json"}] * 3)
    with pytest.raises(openai.APIStatusError) as exc:
        sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.status_code == 502
    assert "JSON" in exc.value.message


def test_a_stream_request_answered_with_whole_json_is_a_failed_attempt_not_a_200(start_gateway, mock_upstream):
    """An upstream that answers ``stream: true`` with ``application/json`` (one that cannot stream the
    endpoint) has sent no stream: nothing has gone to the client yet, so the attempt fails and is
    retried, and when every attempt does, the client gets a 502 rather than a 200 with one error event."""
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    whole = '{"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", ' \
            '"message": {"role": "assistant", "content": "whole"}}]}'
    mock_upstream.script([{"body": whole}])
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=MESSAGES, stream=True)
    assert raw.headers["x-fastinfer-attempts"] == "2"           # the second attempt streamed
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    mock_upstream.script([{"body": whole}] * 3)
    status, headers, answer = http_json("POST", gw.base + "/v1/chat/completions",
                                        {"model": "m", "messages": MESSAGES, "stream": True})
    attempts = {k.lower(): v for k, v in headers.items()}["x-fastinfer-attempts"]
    assert status == 502 and attempts == "3", answer
    assert "not a stream" in answer["error"]["message"]


def test_a_200_that_is_json_but_no_object_fails_and_one_without_usage_is_passed_on_with_an_estimate(
        start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, retry=FAST_RETRY.split("= ", 1)[1]))
    mock_upstream.script([{"body": "[1, 2]"}] * 3)
    with pytest.raises(openai.APIStatusError) as exc:
        sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.status_code == 502 and "JSON object" in exc.value.message
    no_usage = '{"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", ' \
               '"message": {"role": "assistant", "content": "eight characters"}}]}'
    mock_upstream.script([{"body": no_usage}])
    status, _, answer = http_json("POST", gw.base + "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
    assert status == 200 and answer == json.loads(no_usage)      # as it came: the estimate is the gateway's
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_usage_estimated_total{deployment="m"}') == 1
    assert metric_value(text, 'fastinfer_tokens_total{deployment="m",direction="output"}') == 4   # 16 chars / 4


def test_an_upstream_that_never_accepts_is_504_at_the_connect_timeout(start_gateway, mock_upstream):
    """A listener whose accept queue is full drops new SYNs: the connect hangs until connect_s."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    try:
        config = deployment("m", mock_upstream.base, retry="{ max_attempts = 1 }",
                            timeouts="{ connect_s = 0.4 }").replace(
            f"{mock_upstream.base}/v1", f"http://127.0.0.1:{port}/v1")
        gw = start_gateway(config)
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as exc:
            sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
        assert exc.value.status_code == 504
        assert "within 0.4s" in exc.value.message and "connect" in exc.value.message   # that limit, no other
        assert time.monotonic() - t0 >= 0.35
    finally:
        for s in fillers + [listener]:
            s.close()


def test_a_stream_past_its_total_timeout_ends_with_an_error_event(start_gateway, mock_upstream):
    gw = start_gateway(deployment("m", mock_upstream.base, timeouts="{ total_s = 0.6 }"))
    mock_upstream.script([{"tokens": 40, "itl_ms": 50}])   # a 2 s stream, chunks well within idle_s
    t0 = time.monotonic()
    body = _raw_stream(gw)
    assert time.monotonic() - t0 >= 0.55        # not before the limit; after it, the error event says why
    assert b"[DONE]" not in body and body.count(b'"content"') < 40
    last = body.rstrip().split(b"\n\n")[-1]
    assert last.startswith(b'data: {"error"') and b"total timeout" in last


def test_a_retry_sends_the_body_translated_once(start_gateway, mock_upstream):
    # an assistant tool call without an id gets a fresh one in each translation to Anthropic: a body
    # made again for the retry would differ from the first attempt's
    gw = start_gateway(textwrap.dedent(f"""
        [[deployments]]
        name = "an"
        provider = "anthropic"
        model = "claude-mock"
        retry = {FAST_RETRY.split("= ", 1)[1]}
        [[deployments.replicas]]
        base_url = "{mock_upstream.base}/v1"
        credential = {{ value = "sk-ant-secret" }}
    """))
    mock_upstream.script([{"status": 500}])
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "user", "content": "go on"}]
    raw = sdk(gw).chat.completions.with_raw_response.create(model="an", messages=messages)
    assert raw.http_response.status_code == 200 and raw.headers["x-fastinfer-attempts"] == "2"
    first, second = (r["body"] for r in mock_upstream.stats()["received"])
    assert first["messages"][1]["content"][0]["id"].startswith("toolu_")
    assert first == second
