"""The mock upstream's knobs the attempt-loop tests lean on: key rotation, close records, stream faults."""
from __future__ import annotations

import json
import socket
import time

import pytest

from procs import http_json, start_mock, wait_for

CHAT = {"model": "m", "messages": [{"role": "user", "content": "alpha beta gamma"}]}


def chat(mock, key=None, stream=False, header="authorization", **extra):
    headers = {}
    if key is not None:
        headers = {"authorization": f"Bearer {key}"} if header == "authorization" else {"x-api-key": key}
    return http_json("POST", mock.base + "/v1/chat/completions", {**CHAT, "stream": stream, **extra}, headers)


class RawStream:
    """A raw HTTP/1.1 exchange on a socket we close ourselves, at a moment we know."""

    def __init__(self, mock, body: dict, close: bool = False, path: str = "/v1/chat/completions"):
        data = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", mock.port), timeout=10)
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        self.sock.sendall(head.encode() + data)
        self.buf = b""

    def read_until(self, predicate, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not predicate(self.buf):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf

    def read_all(self) -> bytes:
        return self.read_until(lambda b: False)

    def nothing_more_for(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.buf += chunk
        return False

    def close(self) -> float:
        t = time.monotonic()
        self.sock.close()
        return t


def entry_when_closed(mock, request_id: int, timeout: float = 10.0) -> dict:
    def closed():
        return next((e for e in mock.received() if e["id"] == request_id and e["closed_at"] is not None), None)
    entry = wait_for(closed, timeout)
    if entry is None:
        raise AssertionError(f"request {request_id} never recorded as closed")
    return entry


# ------------------------------------------------------------------ keys

def test_api_keys_rotation(mock_upstream):
    assert mock_upstream.control(api_keys=["key-old"])[0] == 200
    assert chat(mock_upstream, "key-old")[0] == 200
    assert chat(mock_upstream, "key-new")[0] == 401
    assert chat(mock_upstream)[0] == 401
    # overlap window: both work
    mock_upstream.control(api_keys=["key-old", "key-new"])
    assert chat(mock_upstream, "key-old")[0] == 200
    assert chat(mock_upstream, "key-new", header="x-api-key")[0] == 200
    # rotated: the old key is refused with OpenAI's 401 shape
    mock_upstream.control(api_keys=["key-new"])
    status, _, body = chat(mock_upstream, "key-old")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert chat(mock_upstream, "key-new")[0] == 200
    # api_key and api_keys add up; clearing both opens the upstream again
    mock_upstream.control(api_key="solo")
    assert chat(mock_upstream, "solo")[0] == 200 and chat(mock_upstream, "key-new")[0] == 200
    mock_upstream.control(api_key=None, api_keys=None)
    assert chat(mock_upstream)[0] == 200


def test_api_keys_from_the_command_line(workdir):
    proc = start_mock(workdir, "--api-keys", "cli-a", "cli-b")
    try:
        assert chat(proc, "cli-b")[0] == 200
        assert chat(proc, "cli-c")[0] == 401
    finally:
        proc.kill()


# --------------------------------------------------------------- headers

def test_scripted_headers_on_successful_answers(mock_upstream):
    mock_upstream.script([{"headers": {"x-ratelimit-remaining-requests": "7"}},
                          {"headers": {"x-ratelimit-remaining-tokens": "99"}},
                          {"status": 429, "headers": {"Retry-After": "3"}}])
    status, headers, body = chat(mock_upstream)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "7"
    assert body["object"] == "chat.completion"
    s = RawStream(mock_upstream, {**CHAT, "stream": True}, close=True)
    raw = s.read_all()
    s.close()
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-ratelimit-remaining-tokens: 99" in head and b"data: [done]" in raw.lower()
    status, headers, _ = chat(mock_upstream)
    assert status == 429 and headers["Retry-After"] == "3"


# ---------------------------------------------------------- stream faults

def test_stream_error_at(mock_upstream):
    mock_upstream.control(tokens=5)
    mock_upstream.script([{"stream_error_at": 3}])
    s = RawStream(mock_upstream, {**CHAT, "stream": True}, close=True)
    raw = s.read_all()
    s.close()
    assert raw.startswith(b"HTTP/1.1 200")
    events = [line for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == 4                         # chunks 0, 1, 2 and the error event
    error = json.loads(events[-1][6:])
    assert error["error"]["type"] == "server_error" and error["error"]["message"]
    assert b"[DONE]" not in raw
    assert raw.endswith(b"0\r\n\r\n")                # a properly ended body: not a cut
    e = mock_upstream.stats()["received"][-1]
    assert e["end"] == "stream_error" and e["client_gone"] is False


_WEATHER = {**CHAT, "messages": [{"role": "user", "content": "weather in Oslo?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", _WEATHER),         # a tool call's stream is written apart (plan.openai_tool_answer)
    ("/v1/completions", {"model": "m", "prompt": "alpha beta"}),
], ids=["chat", "chat-tool-call", "completions"])
def test_stream_error_payload_is_scriptable(mock_upstream, path, body):
    """Every OpenAI-shaped stream of the mock sends the scripted error payload, not its own default."""
    payload = {"error": {"message": "overloaded", "type": "overloaded_error", "code": None}}
    mock_upstream.script([{"stream_error_at": 1, "stream_error": payload}])
    s = RawStream(mock_upstream, {**body, "stream": True}, close=True, path=path)
    raw = s.read_all()
    s.close()
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == 2 and events[-1] == payload
    assert mock_upstream.stats()["received"][-1]["end"] == "stream_error"


def test_idle_after_stalls_with_the_connection_open_and_records_the_client_leaving(mock_upstream):
    mock_upstream.script([{"idle_after": 2}])
    s = RawStream(mock_upstream, {**CHAT, "stream": True})
    s.read_until(lambda b: b.count(b"data: ") >= 2)
    assert s.nothing_more_for(0.5)                  # stalled, yet not closed (recv would return b"")
    assert s.buf.count(b"data: ") == 2
    request_id = mock_upstream.stats()["requests"]
    assert mock_upstream.stats()["received"][-1]["closed_at"] is None
    closed = s.close()
    e = entry_when_closed(mock_upstream, request_id)
    assert e["client_gone"] is True and e["end"] == "client_gone"
    # the mock and the test share the host's monotonic clock; generous bound, the design needs < 0.1 s
    assert 0 <= e["closed_at"] - closed < 2.0
    assert mock_upstream.stats()["disconnects"] == 1


def test_hang_records_the_client_leaving(mock_upstream):
    mock_upstream.script([{"hang": True}])
    s = RawStream(mock_upstream, CHAT)
    assert s.nothing_more_for(0.3)
    closed = s.close()
    e = entry_when_closed(mock_upstream, 1)
    assert e["end"] == "client_gone" and 0 <= e["closed_at"] - closed < 2.0


def test_cut_and_answered_ends(mock_upstream):
    mock_upstream.script([{"cut_after": 2}])
    s = RawStream(mock_upstream, {**CHAT, "stream": True})
    raw = s.read_all()                              # the mock closes: EOF
    s.close()
    assert raw.count(b"data: ") == 2 and b"[DONE]" not in raw
    assert chat(mock_upstream)[0] == 200
    first, second = mock_upstream.stats()["received"][-2:]
    assert (first["end"], first["client_gone"]) == ("cut", False)
    assert (second["end"], second["client_gone"]) == ("answered", False)
    assert second["id"] == first["id"] + 1
    assert first["t"] <= first["closed_at"] <= second["t"] <= second["closed_at"]


@pytest.mark.parametrize("step", [{}, {"garbage_at": 1}])
def test_plain_streams_still_end_with_done(mock_upstream, step):
    mock_upstream.script([step])
    s = RawStream(mock_upstream, {**CHAT, "stream": True}, close=True)
    raw = s.read_all()
    s.close()
    assert b"data: [DONE]" in raw
    assert (b"{not json" in raw) == ("garbage_at" in step)


# ------------------------------------------------------ one truth per answer

_FORMATS = {   # path, body with max_tokens, how to read (finish, id) from a whole answer and from a stream
    "openai": ("/v1/chat/completions", {**CHAT, "max_tokens": 3}),
    "anthropic": ("/v1/messages", {**CHAT, "max_tokens": 3}),
    "gemini": ("/v1beta/models/g:generateContent", {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}],
                                                    "generationConfig": {"maxOutputTokens": 3}}),
}


def _whole(mock, fmt: str, body: dict) -> tuple[str, str]:
    path, _ = _FORMATS[fmt]
    status, _, answer = http_json("POST", mock.base + path, body, {"anthropic-version": "2023-06-01"})
    assert status == 200, answer
    if fmt == "openai":
        return answer["choices"][0]["finish_reason"], answer["id"]
    if fmt == "anthropic":
        return answer["stop_reason"], answer["id"]
    return answer["candidates"][0]["finishReason"], answer["responseId"]


def _streamed(mock, fmt: str, body: dict) -> tuple[str, str]:
    path, _ = _FORMATS[fmt]
    if fmt == "gemini":
        path = path.replace(":generateContent", ":streamGenerateContent?alt=sse")
    else:
        body = {**body, "stream": True}
    status, _, raw = _raw_post(mock, path, body)
    events = [json.loads(line[5:]) for line in raw.splitlines() if line.startswith(b"data:") and line[5:].strip()
              != b"[DONE]"]
    if fmt == "openai":
        finish = next(e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"])
        return finish, events[0]["id"]
    if fmt == "anthropic":
        finish = next(e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta")
        return finish, events[0]["message"]["id"]
    return events[-1]["candidates"][0]["finishReason"], events[0]["responseId"]


def _raw_post(mock, path: str, body: dict):
    import urllib.request
    req = urllib.request.Request(mock.base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


@pytest.mark.parametrize("fmt", _FORMATS)
@pytest.mark.parametrize("tokens, cut", [(8, True), (3, False), (2, False)])
def test_finish_reason_is_the_same_streamed_or_not(mock_upstream, fmt, tokens, cut):
    """An answer of ``tokens`` under max_tokens=3 ends for "length" exactly when it was cut short."""
    mock_upstream.control(tokens=tokens)
    _, body = _FORMATS[fmt]
    whole, streamed = _whole(mock_upstream, fmt, body)[0], _streamed(mock_upstream, fmt, body)[0]
    assert whole == streamed
    assert whole == {"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}[fmt] if cut else \
        whole == {"openai": "stop", "anthropic": "end_turn", "gemini": "STOP"}[fmt]


@pytest.mark.parametrize("fmt", _FORMATS)
def test_ids_are_never_reused_even_after_a_reset(mock_upstream, fmt):
    _, body = _FORMATS[fmt]
    ids = [_whole(mock_upstream, fmt, body)[1], _streamed(mock_upstream, fmt, body)[1]]
    mock_upstream.reset()
    ids += [_whole(mock_upstream, fmt, body)[1], _streamed(mock_upstream, fmt, body)[1]]
    assert len(set(ids)) == 4


def test_a_huge_max_tokens_is_capped_by_tokens(mock_upstream):
    mock_upstream.control(tokens=4)
    status, _, body = chat(mock_upstream, max_tokens=2**31 - 1)
    assert status == 200 and body["usage"]["completion_tokens"] == 4
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("path, body", [   # each of these made the mock answer 500 with a traceback
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "weather"}], "tools": [7]}),
    ("/v1/messages", {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}], "tools": ["s"]}),
    ("/v1beta/models/g:generateContent", {"contents": [{"parts": [{"text": "x"}]}], "tools": [5]}),
])
def test_a_body_the_mock_cannot_read_is_a_400_like_a_real_api(mock_upstream, path, body):
    status, _, answer = http_json("POST", mock_upstream.base + path, body, {"anthropic-version": "2023-06-01"})
    assert status == 400, answer
    assert "could not read" in json.dumps(answer)
    assert "Traceback" not in mock_upstream.stderr()


def test_hold_waits_until_released(mock_upstream):
    mock_upstream.script([{"hold": "gate"}])
    s = RawStream(mock_upstream, CHAT)
    assert wait_for(lambda: mock_upstream.stats()["in_flight"] == 1, timeout=5)
    assert s.nothing_more_for(0.2)
    assert http_json("POST", mock_upstream.base + "/_mock/release", {"hold": "gate"})[2] == {"released": True}
    assert b"chat.completion" in s.read_until(lambda b: b.endswith(b"}"))
    s.close()


def test_an_error_message_can_echo_the_key_it_was_sent(mock_upstream):
    mock_upstream.script([{"status": 401, "message": "Incorrect API key provided: {api_key}"}])
    status, _, body = chat(mock_upstream, "sk-sent-by-the-caller")
    assert status == 401 and body["error"]["message"] == "Incorrect API key provided: sk-sent-by-the-caller"
