"""The HTTP edge end to end: limits checked before translation, methods, request ids, encodings.

Each case is one the issue saw answered 500 (or 404) and now has its own answer: JSON
nested past the depth limit, ``x-timeout-ms`` of 10^400, a garbage gzip body, a GET on a
POST route; and ``x-request-id`` on every answer, admin 401/404/405/413 included.
"""
from __future__ import annotations

import gzip
import http.client
import json
import zlib

import pytest

from fastinfer.gateway.body import MAX_JSON_DEPTH
from procs import http_json

ADMIN = {"Authorization": "Bearer adm-edge-key"}
CONFIG = """
    [server]
    max_body_bytes = 65536
    admin_key = { value = "adm-edge-key" }

    [[deployments]]
    name = "echo"
    provider = "mock"
    mock = { tokens = 3 }

    [[deployments]]
    name = "claude"
    provider = "anthropic"
    [[deployments.replicas]]
    base_url = "http://127.0.0.1:9/v1"
    credential = { value = "sk-ant-never-called-0123" }
"""
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    from procs import start_gateway_proc
    proc = start_gateway_proc(tmp_path_factory.mktemp("edge"), CONFIG)
    yield proc
    proc.stop()


def raw_request(gw, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, body, {"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw) if raw else None
    finally:
        conn.close()


def with_nesting(body: dict, depth: int) -> bytes:
    """``body`` as JSON text with an extra field that makes it ``depth`` levels deep in all
    (the body object is one level). Written by hand: no encoder goes as deep as the test must."""
    inner = depth - 1
    opens = "".join("[" if i % 2 else '{"k":' for i in range(inner))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(inner)))
    return (json.dumps(body)[:-1] + f', "x_extra": {opens}"leaf"{closes}}}').encode()


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)])
def test_json_depth_limit_is_applied_before_translation(gw, path, body):
    status, _, answer = http_json("POST", gw.base + path, with_nesting(body, MAX_JSON_DEPTH))
    assert status == 200, answer
    for depth in (MAX_JSON_DEPTH + 1, 300, 2000):   # 300: past orjson's encoder; 2000: past its parser
        status, headers, answer = http_json("POST", gw.base + path, with_nesting(body, depth))
        assert status == 400 and headers["x-request-id"]
        message = answer["error"]["message"]
        assert "nested more than 64 levels" in message or "not valid JSON" in message
        if path == "/v1/messages":
            assert answer["type"] == "error"


@pytest.mark.parametrize("value", ["1" + "0" * 400, "0", "-5", "5.5", "5 0", "1_000", "\u0661\u0662", "2147483648",
                                   "abc", ""])
def test_a_bad_x_timeout_ms_is_400(gw, value):
    status, headers, answer = raw_request(gw, "POST", "/v1/chat/completions", json.dumps(CHAT).encode(),
                                          {"x-timeout-ms": value.encode("utf-8").decode("latin-1")})
    assert status == 400, answer
    assert answer["error"]["param"] == "x-timeout-ms" and headers["x-request-id"]


@pytest.mark.parametrize("value", ["1", "2147483647", "30000"])
def test_a_good_x_timeout_ms_serves(gw, value):
    assert raw_request(gw, "POST", "/v1/chat/completions", json.dumps(CHAT).encode(), {"x-timeout-ms": value})[0] == 200


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_bodies_are_read_and_garbage_is_400(gw, encoding, compress):
    body = json.dumps(CHAT).encode()
    assert raw_request(gw, "POST", "/v1/chat/completions", compress(body), {"content-encoding": encoding})[0] == 200
    for path in ("/v1/chat/completions", "/v1/messages"):
        status, headers, answer = raw_request(gw, "POST", path, b"garbage, not " + encoding.encode(),
                                              {"content-encoding": encoding})
        assert status == 400 and headers["x-request-id"]
        assert "could not be decoded" in (answer["error"]["message"])


def test_a_compressed_body_that_expands_past_the_limit_is_413(gw):
    bomb = gzip.compress(b'{"model": "echo", "pad": "' + b"0" * 5_000_000 + b'"}')
    assert len(bomb) < 65536
    status, headers, answer = raw_request(gw, "POST", "/v1/chat/completions", bomb, {"content-encoding": "gzip"})
    assert status == 413 and answer["error"]["code"] == "request_too_large" and headers["x-request-id"]


@pytest.mark.parametrize("method, path, allow, shape", [
    ("GET", "/v1/chat/completions", "POST", "openai"),
    ("PUT", "/v1/embeddings", "POST", "openai"),
    ("GET", "/v1/messages", "POST", "anthropic"),
    ("POST", "/v1/models", "GET", "openai"),
    ("DELETE", "/admin/state", "GET", "openai"),
])
def test_a_method_the_route_does_not_serve_is_405_with_allow(gw, method, path, allow, shape):
    status, headers, answer = raw_request(gw, method, path)
    assert status == 405
    assert allow in headers["allow"] and headers["x-request-id"]
    if shape == "anthropic":
        assert answer["type"] == "error" and "not allowed" in answer["error"]["message"]
    else:
        assert answer["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("method, path, body, headers, status", [
    ("GET", "/admin/state", b"", {}, 401),
    ("GET", "/admin/state", b"", {"Authorization": "Bearer wrong"}, 401),
    ("GET", "/admin/state", b"", ADMIN, 200),
    ("POST", "/admin/circuits/nope/r0", b'{"action": "reset"}', ADMIN, 404),
    ("GET", "/no/such/route", b"", {}, 404),
    ("GET", "/v1/chat/completions", b"", {}, 405),
    ("POST", "/v1/chat/completions", b"x" * 70_000, {}, 413),
    ("POST", "/v1/messages", b"x" * 70_000, {}, 413),
    ("GET", "/healthz", b"", {}, 200),
    ("GET", "/readyz", b"", {}, 200),
    ("GET", "/metrics", b"", {}, 200),
    ("GET", "/v1/models", b"", {}, 200),
])
def test_every_answer_carries_a_request_id(gw, method, path, body, headers, status):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == status
    assert resp.getheader("x-request-id")
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(method, path, body, {**headers, "x-request-id": "mine-123"})
    assert conn.getresponse().getheader("x-request-id") == "mine-123"
    conn.close()


@pytest.mark.parametrize("body, param", [
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "max_tokens": 2**31}, "max_tokens"),
    ({**CHAT, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({**CHAT, "n": 0}, "n"),
    ({**CHAT, "n": 129}, "n"),
    ({**CHAT, "n": 2.0}, "n"),
    ({"model": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "image_url", "image_url": {"url": 5}}]}]},
     "messages[0].content[1].image_url.url"),
])
def test_numeric_ranges_and_nested_fields_are_checked(gw, body, param):
    status, _, answer = http_json("POST", gw.base + "/v1/chat/completions", body)
    assert status == 400 and answer["error"]["param"] == param
    assert f"'{param}'" in answer["error"]["message"]


def test_the_limits_hold_at_their_edges(gw):
    assert http_json("POST", gw.base + "/v1/chat/completions", {**CHAT, "max_tokens": 2**31 - 1, "n": 128})[0] == 200
    assert http_json("POST", gw.base + "/v1/chat/completions", {**CHAT, "max_completion_tokens": 1, "n": 1})[0] == 200
    status, _, answer = http_json("POST", gw.base + "/v1/messages", {**MESSAGES, "max_tokens": 0})
    assert status == 400 and answer["error"]["message"].startswith("max_tokens: must be between 1 and 2147483647")


@pytest.mark.parametrize("duration", [10**9, 1e300, 0, -1, "60", True, None])
def test_force_open_duration_outside_the_contract_is_400(gw, duration):
    status, _, answer = http_json("POST", gw.base + "/admin/circuits/echo/r0",
                                  {"action": "force_open", "duration_s": duration}, headers=ADMIN)
    assert status == 400 and answer["error"]["param"] == "duration_s"
    state = http_json("GET", gw.base + "/admin/state", headers=ADMIN)[2]
    assert state["deployments"][0]["replicas"][0]["circuit"]["state"] == "closed"


def test_the_builtin_mock_gives_every_answer_its_own_id(gw):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)   # one worker: addresses get reused
    ids = set()
    for stream in (False, True) * 4:
        conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": stream}),
                     {"content-type": "application/json"})
        raw = conn.getresponse().read()
        first = raw.split(b"\n\n")[0].removeprefix(b"data: ") if stream else raw
        ids.add(json.loads(first)["id"])
    conn.close()
    assert len(ids) == 8


@pytest.mark.parametrize("model", ["echo", "claude"])
@pytest.mark.parametrize("endpoint, body", [("completions", {"prompt": "hi"}), ("embeddings", {"input": "hi"})])
def test_an_endpoint_only_some_providers_have_is_refused_by_the_others(gw, model, endpoint, body):
    """/v1/completions and /v1/embeddings are forwarded to upstreams that have them; the mock (which
    makes chat answers only) and Anthropic's API get a 400 naming the model, not a chat answer."""
    status, _, doc = raw_request(gw, "POST", f"/v1/{endpoint}", json.dumps({"model": model, **body}).encode())
    assert status == 400, doc
    assert doc["error"]["param"] == "model" and f"does not serve /v1/{endpoint}" in doc["error"]["message"]
