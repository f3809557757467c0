"""Credential rotation, session rebuilds, and clients that leave — with 2 workers."""
from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
import time
import urllib.request

import anthropic
import openai

from procs import http_json, metric_value, metrics_text, raw_post, wait_for

MESSAGES = [{"role": "user", "content": "hello"}]
ADMIN = {"Authorization": "Bearer adm"}


def config(upstream_base: str, credential: str, **options) -> str:
    extra = "\n".join(f"{k} = {v}" for k, v in options.items())
    return textwrap.dedent(f"""
        [server]
        admin_key = {{ value = "adm" }}

        [[deployments]]
        name = "m"
        provider = "openai_compatible"
        model = "mock-model"
        retry = {{ max_attempts = 2, base_ms = 10, max_ms = 20 }}
        {extra}

        [[deployments.replicas]]
        base_url = "{upstream_base}/v1"
        credential = {credential}
    """)


def replace_file(path, text: str) -> None:
    tmp = f"{path}.new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def keys_seen(mock_upstream, since: int = 0) -> list[str]:
    return [r["headers"].get("authorization") for r in mock_upstream.stats()["received"][since:]]


def test_file_credential_rotated_under_steady_traffic_loses_no_request(start_gateway, mock_upstream, workdir):
    key_file = workdir / "key"
    key_file.write_text("sk-old\n")
    mock_upstream.control(api_keys=["sk-old"])
    gw = start_gateway(config(mock_upstream.base, f'{{ file = "{key_file}" }}'))
    failures, successes = [], [0]
    stop = threading.Event()

    def traffic():
        client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=10)
        while not stop.is_set():
            try:
                client.chat.completions.create(model="m", messages=MESSAGES)
                successes[0] += 1
            except openai.APIError as e:
                failures.append(e)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_for(lambda: successes[0] >= 10)
    # the provider issues a new key and revokes the old one at once; the gateway's file follows
    replace_file(key_file, "sk-new\n")
    mock_upstream.control(api_keys=["sk-new"])
    rotated_at = successes[0]
    assert wait_for(lambda: successes[0] >= rotated_at + 20 or failures)   # served on the new key since
    stop.set()
    for t in threads:
        t.join(15)
    assert not failures, failures[:3]
    assert successes[0] > 20
    seen = keys_seen(mock_upstream)
    assert seen[0] == "Bearer sk-old" and seen[-1] == "Bearer sk-new"
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    # each worker saw the new file (or had the key refused first and re-read it)
    rotations = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith('fastinfer_session_rebuilds_total{deployment="m",cause='))
    assert 1 <= rotations <= 4


def test_a_stream_in_flight_finishes_on_the_old_session_during_a_rebuild(start_gateway, mock_upstream):
    mock_upstream.control(tokens=8, itl_ms=100)
    gw = start_gateway(config(mock_upstream.base, '{ value = "k" }'))
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    assert http_json("POST", gw.base + "/admin/sessions/m/rebuild", b"", headers=ADMIN)[0] == 200
    rest = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == "hello " * 8
    assert rest[-1].choices[0].finish_reason == "stop"
    (entry,) = mock_upstream.stats()["received"]
    assert entry["end"] == "answered"


def test_admin_rebuild_reaches_every_worker(start_gateway, mock_upstream, workdir):
    key_file = workdir / "key"
    key_file.write_text("sk-one")
    helper = [sys.executable, "-c", f"print(open({str(key_file)!r}).read())"]
    mock_upstream.control(api_keys=["sk-one", "sk-two"])
    # a JSON array of strings is a TOML array too
    gw = start_gateway(config(mock_upstream.base, f"{{ command = {json.dumps(helper)}, ttl_s = 3600 }}"))
    for _ in range(4):
        assert http_json("POST", gw.base + "/v1/chat/completions", {"model": "m", "messages": MESSAGES},
                         headers={"connection": "close"})[0] == 200
    key_file.write_text("sk-two")
    seen_before = len(mock_upstream.stats()["received"])
    status, _, body = http_json("POST", gw.base + "/admin/sessions/m/rebuild", b"", headers=ADMIN)
    assert status == 200 and body["generation"] == 1
    for _ in range(10):  # connection: close spreads these over both workers
        assert http_json("POST", gw.base + "/v1/chat/completions", {"model": "m", "messages": MESSAGES},
                         headers={"connection": "close"})[0] == 200
    assert set(keys_seen(mock_upstream, seen_before)) == {"Bearer sk-two"}
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'fastinfer_session_rebuilds_total{deployment="m",cause="admin"} 1' in metrics
    assert "sk-two" not in metrics and "sk-one" not in metrics


def _state(gw) -> dict:
    return http_json("GET", gw.base + "/admin/state", headers=ADMIN)[2]["deployments"][0]


def assert_upstream_closed_when_client_leaves(sock: socket.socket, mock_upstream) -> None:
    """Close the client's socket: the one upstream request is closed within 100 ms,
    recorded as the client having gone."""
    left_at = time.monotonic()
    sock.close()
    assert wait_for(lambda: mock_upstream.stats()["received"][0]["closed_at"] is not None, timeout=5)
    (entry,) = mock_upstream.stats()["received"]
    assert entry["client_gone"] is True
    assert entry["closed_at"] - left_at < 0.1


def test_client_leaving_before_the_first_byte_closes_the_upstream_at_once(start_gateway, mock_upstream):
    mock_upstream.control(latency_ms=5000)
    gw = start_gateway(config(mock_upstream.base, '{ value = "k" }'))
    sock = raw_post(gw.port, {"model": "m", "messages": MESSAGES})
    wait_for(lambda: mock_upstream.stats()["in_flight"] != 0, timeout=5, interval=0.01)
    assert_upstream_closed_when_client_leaves(sock, mock_upstream)
    state = _state(gw)
    assert state["in_flight"] == 0
    assert state["replicas"][0]["circuit"]["consecutive_failures"] == 0  # a client leaving is no failure
    assert _client_closed_count(gw) == 1


def test_client_leaving_mid_stream_closes_the_upstream_at_once(start_gateway, mock_upstream):
    mock_upstream.control(tokens=50, itl_ms=100)
    gw = start_gateway(config(mock_upstream.base, '{ value = "k" }'))
    sock = raw_post(gw.port, {"model": "m", "messages": MESSAGES, "stream": True})
    got = b""
    while got.count(b"data: ") < 3:
        chunk = sock.recv(65536)
        assert chunk, f"the gateway closed the stream early: {got!r}"
        got += chunk
    assert_upstream_closed_when_client_leaves(sock, mock_upstream)
    assert _state(gw)["in_flight"] == 0
    assert _client_closed_count(gw) == 1


def _client_closed_count(gw) -> float:
    """Requests counted with code 499: the client went away before its answer was complete."""
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('fastinfer_requests_total{deployment="m",code="499"} '):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no 499 series")


def test_client_leaving_the_queue_frees_its_place_at_once(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(config(mock_upstream.base, '{ value = "k" }', max_concurrency=1, queue_capacity=4))
    holder = raw_post(gw.port, {"model": "m", "messages": MESSAGES})
    assert mock_upstream.wait_in_flight(1)
    queued = raw_post(gw.port, {"model": "m", "messages": MESSAGES})
    assert wait_for(lambda: _state(gw)["queue_depth"] == 1, timeout=5)
    queued.close()
    assert wait_for(lambda: _state(gw)["queue_depth"] == 0, timeout=5)
    mock_upstream.release("slot")
    holder.settimeout(5)
    assert holder.recv(100).startswith(b"HTTP/1.1 200")
    holder.close()
    assert wait_for(lambda: _state(gw)["in_flight"] == 0, timeout=5)
    assert mock_upstream.stats()["requests"] == 1   # the one that left never reached the upstream
    assert _client_closed_count(gw) == 1


def test_a_stream_ends_for_a_client_reading_to_its_end_though_the_upstream_holds_its_body_open(
        start_gateway, mock_upstream):
    """The Anthropic SDK reads a stream to the end of the body. An upstream (or a proxy before it)
    that sends its last event and then holds the body open 8 s: the client's stream ends soon after
    that last event (the gateway waits half a second for the upstream's end, then ends it itself),
    whole, and the attempt is a success."""
    mock_upstream.script([{"tokens": 3, "end_after_done_ms": 8000}])
    gw = start_gateway(config(mock_upstream.base, '{ value = "k" }'))
    client = anthropic.Anthropic(base_url=gw.base, api_key="x", max_retries=0, timeout=20)
    started = time.monotonic()
    with client.messages.stream(model="m", max_tokens=10, messages=MESSAGES) as stream:
        message = stream.get_final_message()
    assert time.monotonic() - started < 6, "the client waited for the upstream's held body"
    assert message.stop_reason == "end_turn" and message.content[0].text
    assert wait_for(lambda: mock_upstream.stats()["received"][0]["closed_at"] is not None, timeout=5)
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_requests_total{deployment="m",code="200"}') == 1
    assert metric_value(text, 'fastinfer_upstream_requests_total{deployment="m",replica="r0",outcome="success"}') == 1


def test_a_client_closing_at_done_had_its_whole_stream(start_gateway, mock_upstream):
    """The OpenAI SDK closes its connection as soon as it reads [DONE]. When the upstream's end of
    the body comes in a later read than its [DONE] (the mock holds it back here; a busy host splits
    them by chance), the gateway has sent the client its whole stream before that end: a client
    leaving then left after its answer was complete. A 200 and a successful attempt, not a 499."""
    mock_upstream.script([{"tokens": 3, "end_after_done_ms": 1000}])
    gw = start_gateway(config(mock_upstream.base, '{ value = "k" }'))
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    # the upstream request closes when the gateway's handler has ended (its end never came)
    assert wait_for(lambda: mock_upstream.stats()["received"][0]["closed_at"] is not None, timeout=5)
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_requests_total{deployment="m",code="200"}') == 1
    assert metric_value(text, 'fastinfer_requests_total{deployment="m",code="499"}') == 0
    assert metric_value(text, 'fastinfer_upstream_requests_total{deployment="m",replica="r0",outcome="success"}') == 1
