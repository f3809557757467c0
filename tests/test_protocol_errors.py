"""Requests aiohttp refuses before any middleware runs, sent as raw bytes to a real ``serve``.

aiohttp answered these with a plain-text ``400`` and no ``x-request-id``; each now gets a
JSON error in the OpenAI shape (the request line may never have been read, so the path
is unknown) with a request id, no traceback in the log, and the server serves the next
request.
"""
from __future__ import annotations

import json
import socket

import pytest

from procs import http_json

CONFIG = """
    [[deployments]]
    name = "echo"
    provider = "mock"
    mock = { tokens = 3 }
"""
SECRET = "sk-protocol-secret-123456"

MALFORMED = {
    "request-line": b"THIS IS NOT HTTP\r\n\r\n",
    "http-version": b"GET /v1/models HTTP/9.x\r\nHost: a\r\n\r\n",
    "content-length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n{}",
    "two-content-lengths": (b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}"),
    "oversized-header": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + SECRET.encode()
                         + b"\r\nX-Big: " + b"x" * 20000 + b"\r\nContent-Length: 2\r\n\r\n{}"),
    "oversized-request-line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    from procs import start_gateway_proc
    proc = start_gateway_proc(tmp_path_factory.mktemp("protocol"), CONFIG, workers=1)
    yield proc
    proc.stop()


def send_raw(port: int, data: bytes) -> tuple[int, dict, bytes]:
    """Send ``data``, read until the server closes; the status, headers and body of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_request_aiohttp_refuses_is_a_json_400_with_a_request_id(gw, case):
    status, headers, body = send_raw(gw.port, MALFORMED[case])
    assert status == 400, (headers, body)
    assert headers["x-request-id"], headers
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]                      # the OpenAI shape
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Malformed HTTP request: ") and len(error["message"]) < 300, error
    assert SECRET not in body.decode("latin-1")
    assert b"x" * 20 not in body and b"a" * 20 not in body    # the client's bytes are not echoed back
    # the server keeps serving: the next request, on a new connection, is answered
    status, _, models = http_json("GET", gw.base + "/v1/models")
    assert status == 200 and models["data"][0]["id"] == "echo"


def test_protocol_errors_get_distinct_ids_and_write_no_traceback(gw):
    ids = {send_raw(gw.port, MALFORMED["content-length"])[1]["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert "Traceback" not in gw.stderr() and "Error handling request" not in gw.stderr()


def _refused_400s(gw) -> float:
    """``fastinfer_requests_total`` for 400s that named no deployment, from the gateway's /metrics."""
    import urllib.request

    from promtext import parse
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        family = parse(resp.read().decode())["fastinfer_requests_total"]
    return sum(v for labels, v in family.series().items() if ("code", "400") in labels and ("deployment", "") in labels)


def test_protocol_errors_are_counted_like_every_other_answer(gw):
    before = _refused_400s(gw)
    for _ in range(3):
        assert send_raw(gw.port, MALFORMED["content-length"])[0] == 400
    assert _refused_400s(gw) == before + 3
