"""RPM/TPM limits end to end: 2 workers sharing one host's buckets, a mock upstream that counts.

Counts are asserted exactly; timing only with bounds derived from the configured rates (a
bucket refills at rpm/60 per second, so what a test may see admitted grows with how long it
ran, and that is what the bounds say).
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request

import anthropic
import openai
import pytest

from procs import http_json, in_parallel, wait_for
from test_gateway_keys import ADMIN, keys_config

KEY = "sk-limits-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def key_block(**limits) -> str:
    extra = "\n".join(f"{k} = {v}" for k, v in limits.items())
    return f"""
        [[keys]]
        name = "team"
        key = "{KEY}"
        {extra}
    """


def chat(gw, content: str = "a b c d e", headers: dict | None = None, **body):
    payload = {"model": "m", "messages": [{"role": "user", "content": content}], **body}
    return http_json("POST", gw.base + "/v1/chat/completions", payload,
                     headers={"connection": "close", **AUTH, **(headers or {})}, timeout=60)


def scrape(gw) -> str:
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def series(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_key_rpm_is_exact_across_workers_under_40_concurrent_requests(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, key_block(rpm=10)))
    started = time.monotonic()
    answers = in_parallel(40, lambda i: chat(gw))
    elapsed = time.monotonic() - started
    ok = [a for a in answers if a[0] == 200]
    limited = [a for a in answers if a[0] == 429]
    assert len(ok) + len(limited) == 40
    # a full bucket of 10, plus what it refilled (10 a minute) while the test ran
    assert 10 <= len(ok) <= 10 + int(elapsed * 10 / 60)
    assert mock_upstream.stats()["requests"] == len(ok)
    for status, headers, body in limited:
        assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
        assert int(headers["retry-after"]) >= 1
        assert headers["x-ratelimit-remaining-requests"] == "0"
    text = scrape(gw)
    assert series(text, 'fastinfer_key_requests_total{key="team",code="429"}') == len(limited)
    assert series(text, 'fastinfer_rejected_total{deployment="m",reason="key_rate_limited"}') == len(limited)


@pytest.mark.parametrize("stream", [False, True])
def test_tpm_is_charged_the_upstreams_usage(start_gateway, mock_upstream, stream):
    """tpm 60 (one token a second); each answer uses 5 prompt + 20 completion tokens by the mock's
    count, while the gateway estimates 3 (9 characters, no max_tokens): after three answers the
    bucket is 15 in debt, which only the real usage explains."""
    mock_upstream.control(tokens=20)
    gw = start_gateway(keys_config(mock_upstream.base, key_block(tpm=60)))
    started = time.monotonic()
    left = []
    for _ in range(3):
        status, headers, body = chat(gw, stream=stream) if not stream else stream_chat(gw)
        assert status == 200, body
        left.append(int(headers["x-ratelimit-remaining-tokens"]))
    status, headers, body = chat(gw)
    elapsed = time.monotonic() - started
    refill = int(elapsed * 60 / 60) + 1
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    if not stream:
        # a whole answer's headers are written after its usage is accounted
        assert 35 <= left[0] <= 35 + refill and 10 <= left[1] <= 10 + refill and left[2] <= refill
    else:
        # a stream's headers leave before its usage is known: they show the estimate (3) charged
        assert 57 <= left[0] <= 57 + refill and 32 <= left[1] <= 32 + refill
    debt = series(scrape(gw), 'fastinfer_ratelimit_remaining{scope="key",name="team",kind="tokens"}')
    assert -16 <= debt <= -15 + refill
    text = scrape(gw)
    assert series(text, 'fastinfer_key_tokens_total{key="team",direction="input"}') == 15
    assert series(text, 'fastinfer_key_tokens_total{key="team",direction="output"}') == 60


def stream_chat(gw):
    """A streamed request with the openai SDK; (200, headers, None) once its last event is read."""
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key=KEY, max_retries=0, timeout=30)
    with client.chat.completions.with_streaming_response.create(
            model="m", messages=[{"role": "user", "content": "a b c d e"}], stream=True) as response:
        headers = dict(response.headers)
        chunks = list(response.parse())
    assert chunks
    return 200, headers, None


def test_a_failed_request_gives_its_tokens_back(start_gateway, mock_upstream):
    """The upstream fails: the estimate charged at admission (the prompt and max_tokens 400) goes
    back to the key's and the deployment's token buckets before the error is answered; the
    request itself stays counted."""
    gw = start_gateway(keys_config(mock_upstream.base, key_block(rpm=10, tpm=600), rate_limit="{ tpm = 1000 }",
                                   retry="{ max_attempts = 1 }"))
    mock_upstream.script([{"status": 500}])
    status, headers, _ = chat(gw, max_tokens=400)
    assert status >= 500
    assert headers["x-ratelimit-remaining-tokens"] == "600"         # full again (the least left of both)
    assert headers["x-ratelimit-remaining-requests"] == "9"
    text = scrape(gw)
    assert series(text, 'fastinfer_ratelimit_remaining{scope="deployment",name="m",kind="tokens"}') == 1000
    assert series(text, 'fastinfer_ratelimit_remaining{scope="key",name="team",kind="tokens"}') == 600


def test_the_queue_paces_requests_at_the_buckets_rate(start_gateway, mock_upstream):
    """rpm 120 with a burst of 1: one request every 0.5 s, the rest wait in the rate queue."""
    gw = start_gateway(keys_config(mock_upstream.base, "", rate_limit="{ rpm = 120, burst = 1 }"))
    answers = in_parallel(5, lambda i: chat(gw))
    assert [a[0] for a in answers] == [200] * 5
    arrivals = sorted(entry["t"] for entry in mock_upstream.received())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 4 * 0.5 - 0.05
    assert min(gaps) >= 0.5 - 0.1        # each admitted when its token was due, not before
    assert answers[0][1]["x-ratelimit-limit-requests"] == "1"


def test_the_rate_queue_serves_waiters_in_priority_order(start_gateway, mock_upstream):
    """rpm 30, burst 1: a token every 2 s. The first waiter holds the queue's turn and sleeps
    until its token is due; the others are served by priority, not by arrival."""
    gw = start_gateway(keys_config(mock_upstream.base, "", rate_limit="{ rpm = 30, burst = 1 }"))
    assert chat(gw, "first")[0] == 200
    threads = []

    def send(name: str, priority: str) -> None:
        threads.append(threading.Thread(target=chat, args=(gw, name, {"x-priority": priority})))
        threads[-1].start()

    def depth() -> float:
        return series(scrape(gw), 'fastinfer_queue_depth{deployment="m"}')

    for n, (name, priority) in enumerate([("sleeper", "background"), ("late-background", "background"),
                                          ("normal", "normal"), ("critical", "critical")]):
        send(name, priority)
        assert wait_for(lambda: depth() == n + 1)
    # the admin API counts the waiters as the gauge does (by priority: those behind the sleeper)
    state = http_json("GET", gw.base + "/admin/state", headers={"Authorization": f"Bearer {ADMIN}"})[2]
    m = next(d for d in state["deployments"] if d["name"] == "m")
    assert m["queue_depth"] == 4, m
    assert m["queue_by_priority"]["critical"] == m["queue_by_priority"]["normal"] == 1, m
    for t in threads:
        t.join(60)
    order = [e["body"]["messages"][0]["content"] for e in sorted(mock_upstream.received(), key=lambda e: e["t"])]
    assert order == ["first", "sleeper", "critical", "normal", "late-background"]


def test_reject_answers_429_with_retry_after(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, "", rate_limit="{ rpm = 2 }",
                                   on_capacity_exhausted='"reject"'))
    assert [chat(gw)[0] for _ in range(2)] == [200, 200]
    status, headers, body = chat(gw)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(headers["retry-after"]) <= 30          # a token every 30 s
    assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
    assert _DURATION.match(headers["x-ratelimit-reset-requests"])
    assert mock_upstream.stats()["requests"] == 2
    assert series(scrape(gw), 'fastinfer_rejected_total{deployment="m",reason="rate_limited"}') == 1


def test_fallback_goes_to_the_first_usable_fallback(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, "", rate_limit="{ rpm = 1 }",
                                   on_capacity_exhausted='"fallback"', fallbacks='["claude-mock"]'))
    assert chat(gw)[0] == 200
    status, headers, _ = chat(gw)
    assert status == 200 and headers["x-fastinfer-deployment"] == "claude-mock"
    assert [e["path"] for e in mock_upstream.received()] == ["/v1/chat/completions", "/v1/messages"]
    assert series(scrape(gw), 'fastinfer_fallbacks_total{deployment="m",to="claude-mock"}') == 1


def test_a_rate_queue_wait_longer_than_queue_timeout_goes_to_the_fallback(start_gateway, mock_upstream):
    """In the deployment's rate queue, a wait known to outlast ``queue_timeout_s`` (the next token in
    ~60 s, 0.5 s allowed) is a timed-out queue: the fallback serves it, at once."""
    gw = start_gateway(keys_config(mock_upstream.base, "", rate_limit="{ rpm = 1 }", queue_timeout_s=0.5,
                                   fallbacks='["claude-mock"]'))
    assert chat(gw)[0] == 200
    status, headers, _ = chat(gw)
    assert status == 200 and headers["x-fastinfer-deployment"] == "claude-mock"
    assert [e["path"] for e in mock_upstream.received()] == ["/v1/chat/completions", "/v1/messages"]
    text = scrape(gw)
    assert series(text, 'fastinfer_rejected_total{deployment="m",reason="queue_timeout"}') == 1
    assert series(text, 'fastinfer_fallbacks_total{deployment="m",to="claude-mock"}') == 1


def test_key_concurrency_is_429_above_its_max(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, key_block(max_concurrency=2)))
    mock_upstream.script([{"hold": "two"}, {"hold": "two"}])
    held = [threading.Thread(target=chat, args=(gw,)) for _ in range(2)]
    for t in held:
        t.start()
    assert mock_upstream.wait_in_flight(2)
    status, headers, body = chat(gw)
    assert status == 429 and "max_concurrency" in body["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    mock_upstream.release("two")
    for t in held:
        t.join(30)
    assert chat(gw)[0] == 200                  # both slots came back
    assert series(scrape(gw), 'fastinfer_rejected_total{deployment="m",reason="key_concurrency"}') == 1


def test_a_limit_that_can_never_be_met_is_a_429_that_says_so(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, key_block(tpm=100), rate_limit="{ tpm = 1000 }"))
    status, headers, body = chat(gw, max_tokens=500)
    assert status == 429 and "can never be admitted" in body["error"]["message"]
    assert "team" in body["error"]["message"] and "retry-after" not in headers
    # the deployment's own limit, in a queue: an answer at once, not a wait until queue_timeout_s
    gw2 = start_gateway(keys_config(mock_upstream.base, "", rate_limit="{ tpm = 1000 }", queue_timeout_s=60))
    started = time.monotonic()
    status, _, body = chat(gw2, max_tokens=5000)
    assert status == 429 and "can never be admitted" in body["error"]["message"]
    assert time.monotonic() - started < 60
    assert mock_upstream.stats()["requests"] == 0


def test_the_sdks_raise_rate_limit_errors(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, key_block(rpm=1)))
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key=KEY, max_retries=0, timeout=20)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "rate_limit_exceeded"
    ant = anthropic.Anthropic(base_url=gw.base, api_key=KEY, max_retries=0, timeout=20)
    with pytest.raises(anthropic.RateLimitError) as refused:
        ant.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "rate_limit_error"


def test_every_answer_under_a_limit_carries_the_headers(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, key_block(rpm=5, tpm=10_000), rate_limit="{ rpm = 600 }"))
    seen = [chat(gw)[1] for _ in range(3)]
    # the key's 5 a minute has less left than the deployment's 600: the requests headers are the key's
    assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["4", "3", "2"]
    assert all(h["x-ratelimit-limit-requests"] == "5" and h["x-ratelimit-limit-tokens"] == "10000" for h in seen)
    assert all(_DURATION.match(h["x-ratelimit-reset-requests"]) and _DURATION.match(h["x-ratelimit-reset-tokens"])
               for h in seen)
    # a stream's head, and the answers aiohttp writes (HTTP/1.0), carry each of them once too
    gw = start_gateway(keys_config(mock_upstream.base, key_block(rpm=50, tpm=10_000)))
    for version, stream in ((b"HTTP/1.1", True), (b"HTTP/1.0", False), (b"HTTP/1.0", True)):
        fields = raw_head_fields(gw, version, stream)
        names = [name for name, _ in fields]
        assert sorted(n for n in names if n.startswith("x-ratelimit")) == sorted(RATE_HEADERS), (version, fields)
        values = dict(fields)
        assert values["x-ratelimit-limit-requests"] == "50" and values["x-ratelimit-limit-tokens"] == "10000"
        assert int(values["x-ratelimit-remaining-requests"]) < 50 and _DURATION.match(values["x-ratelimit-reset-tokens"])
    open_gw = start_gateway(keys_config(mock_upstream.base, ""))
    assert not any(k.startswith("x-ratelimit") for k in chat(open_gw)[1])     # no limit, no headers
    assert not any(name.startswith("x-ratelimit") for name, _ in raw_head_fields(open_gw, b"HTTP/1.0", False))


RATE_HEADERS = [f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")]


def raw_head_fields(gw, version: bytes, stream: bool) -> list[tuple[str, str]]:
    """The head of a chat answer to a request sent as ``version`` (read to the close): its fields."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "a b"}], "stream": stream}).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions " + version + b"\r\nHost: t\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    assert head[0].startswith(version.decode() + " 200"), answer[:300]
    return [(name.lower(), value) for name, _, value in (line.partition(": ") for line in head[1:])]


def test_admin_keys_and_stats_show_what_is_left(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, key_block(rpm=5, max_concurrency=3),
                                   rate_limit="{ rpm = 600, tpm = 100000 }"))
    assert chat(gw)[0] == 200
    admin = {"Authorization": f"Bearer {ADMIN}"}
    (key,) = http_json("GET", gw.base + "/admin/keys", headers=admin)[2]["keys"]
    assert key["limits"] == {"rpm": 5, "tpm": None, "max_concurrency": 3}
    assert key["remaining"]["requests"] == 4 and key["remaining"]["concurrency"] == 3
    assert key["budget"] is None and key["spend_usd"] == 0
    # a request is counted just after its answer went out: another worker may serve the scrape first
    stats = wait_for(lambda: (s := http_json("GET", gw.base + "/admin/stats", headers=admin)[2])
                     ["keys"][0]["requests"]["total"] and s, timeout=5)
    (entry,) = stats["keys"]
    assert entry["requests"]["total"] == 1 and entry["tokens"]["output"] > 0
    assert {(x["name"], x["limit"]) for x in entry["limits"]} == {("rpm", 5), ("max_concurrency", 3)}
    dep = next(d for d in stats["deployments"] if d["name"] == "m")
    assert {(x["name"], x["kind"], x["limit"]) for x in dep["limits"]} == {("rpm", "requests", 600),
                                                                           ("tpm", "tokens", 100000)}
    assert next(x for x in dep["limits"] if x["name"] == "rpm")["remaining"] in (599, 600)
