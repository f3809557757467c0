"""HTTP/1.1 connection handling of a real ``serve``, black-box, over raw sockets.

What a client sees on one connection: kept-alive and pipelined requests answered in order,
requests split into many sends, chunked bodies and streamed answers, ``Expect: 100-continue``,
``Connection: close`` and HTTP/1.0, malformed bytes after a good request, body timeouts and
oversized bodies, clients that vanish, header case and request ids, the idle timeout, and a
401 that leaves the connection usable. Every answer carries an ``x-request-id`` and errors
take the caller's API shape (Anthropic on ``/v1/messages``, OpenAI elsewhere).

These hold whichever protocol object serves the connection (aiohttp's, or the gateway's own
for the data routes): they assert the bytes on the wire, never how they were produced.
"""
from __future__ import annotations

import json
import re
import socket
import time

import pytest
from aiohttp import http_parser

from procs import start_gateway_proc

KEY = "sk-gw-conn-test-7f3a9c"
AUTH = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
MAX_BODY = 4096
BODY_TIMEOUT_S = 1.0


def mock_deployment(name: str, mock: str) -> str:
    return f"""
    [[deployments]]
    name = "{name}"
    provider = "mock"
    mock = {{ {mock} }}
"""


CONFIG = f"""
    [server]
    max_body_bytes = {MAX_BODY}
    client_body_timeout_s = {BODY_TIMEOUT_S}

    [[keys]]
    name = "team"
    key = {{ value = "{KEY}" }}
""" + mock_deployment("echo", "tokens = 3") + mock_deployment("slow", "tokens = 40, itl_ms = 100") + \
    mock_deployment("big", "tokens = 5000")
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
ECHOED = "hi hi hi "        # the mock repeats the last user message, one word per token
TIMEOUT_S = 10.0


def gateway(tmp_path_factory, name: str, config: str):
    proc = start_gateway_proc(tmp_path_factory.mktemp(name), config, workers=1)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from gateway(tmp_path_factory, "connections", CONFIG)


# --- the client side: bytes out, one parsed answer at a time in ---------------------------------

class Answer:
    def __init__(self, version: str, status: int, headers: dict, body: bytes, chunks: list[bytes] | None):
        self.version = version
        self.status = status
        self.headers = headers          # lower-cased names; a repeated header keeps its last value
        self.body = body                # de-chunked
        self.chunks = chunks            # the chunks as framed (chunked answers only), the 0-length one last

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.version} {self.status} {self.headers} {self.body[:300]!r}>"


class Conn:
    """A raw client connection with a read buffer: parse one answer off it and leave the rest."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, data: bytes) -> Answer:
        """Send a request and read its answer."""
        self.send(data)
        return self.read()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; unread: {self.buf[:300]!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read(self) -> Answer:
        """The next answer (an interim ``100 Continue`` too); every final one has a request id."""
        version, status, *_ = self._line().decode("latin-1").split(" ", 2)
        headers = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status)
        chunks = None
        if status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                chunks.append(self._exactly(size))
                if size == 0:
                    while self._line():        # trailers, if any, up to the empty line
                        pass
                    break
                assert self._exactly(2) == b"\r\n"
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:                                   # delimited by the close
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
            body, self.buf = self.buf, b""
        answer = Answer(version, status, headers, body, chunks)
        if status >= 200:
            assert answer.headers.get("x-request-id"), answer
        return answer

    def closed_by_server(self) -> bool:
        """True once the server has closed (EOF or reset) with nothing more sent; False if it
        sends bytes; a socket.timeout if it does neither within TIMEOUT_S."""
        if self.buf:
            return False
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True


def post(path: str = "/v1/chat/completions", body: dict | bytes = CHAT, extra: bytes = b"",
         auth: bytes = AUTH, version: bytes = b"HTTP/1.1") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (b"POST %s %s\r\nHost: 127.0.0.1\r\n%sContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), version, auth, extra, len(data), data))


def get(path: str, auth: bytes = AUTH) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path.encode(), auth)


def head_and_body(request: bytes) -> tuple[bytes, bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


def assert_chat(answer: Answer) -> dict:
    assert answer.status == 200, answer
    completion = answer.json()
    assert completion["object"] == "chat.completion", completion
    assert completion["choices"][0]["message"]["content"] == ECHOED, completion
    return completion


def assert_message(answer: Answer) -> dict:
    assert answer.status == 200, answer
    message = answer.json()
    assert message["type"] == "message" and message["content"][0]["text"] == ECHOED, message
    return message


def assert_models(answer: Answer) -> None:
    assert answer.status == 200, answer
    assert {m["id"] for m in answer.json()["data"]} == {"echo", "slow", "big"}, answer


def openai_error(answer: Answer, status: int) -> dict:
    assert answer.status == status, answer
    error = answer.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), error
    return error


def anthropic_error(answer: Answer, status: int) -> dict:
    assert answer.status == status, answer
    doc = answer.json()
    assert doc["type"] == "error", doc
    error = doc["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), error
    return error


@pytest.fixture
def conn(gw):
    """A fresh connection to the module's gateway, closed after the test."""
    with Conn(gw.port) as c:
        yield c


ERROR_SHAPE = {"/v1/chat/completions": (openai_error, CHAT), "/v1/messages": (anthropic_error, MESSAGES)}


def serves(gw) -> None:
    """A fresh connection is answered: the gateway kept serving."""
    with Conn(gw.port) as conn:
        assert_chat(conn.ask(post()))


# --- kept alive, pipelined, split ------------------------------------------------------

def test_one_connection_serves_many_requests_in_order(conn):
    ids = []
    for _ in range(3):
        answer = conn.ask(post())
        assert_chat(answer)
        assert answer.headers.get("connection", "").lower() != "close", answer
        ids.append(answer.headers["x-request-id"])
    health = conn.ask(get("/healthz", auth=b""))
    assert health.status == 200 and health.json()["status"] == "ok", health
    assert_models(conn.ask(get("/v1/models")))
    assert_message(conn.ask(post("/v1/messages", MESSAGES)))
    for path, body in (("/v1/completions", {"model": "echo", "prompt": "hi"}),
                       ("/v1/embeddings", {"model": "echo", "input": "hi"})):
        answer = conn.ask(post(path, body))      # the mock makes chat answers only: a 400, and the connection goes on
        assert answer.status == 400 and answer.json()["error"]["param"] == "model", answer
        assert answer.headers.get("connection", "").lower() != "close", answer
        ids.append(answer.headers["x-request-id"])
    ids.append(conn.ask(post()).headers["x-request-id"])
    assert len(set(ids)) == len(ids)        # each answer is its own request's


def test_an_answer_too_large_to_join_into_one_write_and_the_next_arrive_whole_and_in_order(conn):
    """A whole answer past what the connection joins into one write (``_core.client.JOIN_MAX``, 16 KiB)
    goes out as head and body apart; the answer after it on the connection follows it whole."""
    big = conn.ask(post("/v1/chat/completions", {"model": "big", "messages": [{"role": "user", "content": "word"}]}))
    assert big.status == 200 and big.json()["choices"][0]["message"]["content"] == "word " * 5000, big
    assert len(big.body) > 16 * 1024 and int(big.headers["content-length"]) == len(big.body)
    assert_chat(conn.ask(post()))


def test_two_pipelined_requests_are_both_answered_in_order(conn):
    second = {**CHAT, "messages": [{"role": "user", "content": "yo"}]}
    assert_chat(conn.ask(post() + post(body=second)))
    answer = conn.read()
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "yo yo yo ", answer


def test_three_pipelined_requests_of_different_routes_are_answered_in_order(conn):
    assert_chat(conn.ask(post() + get("/v1/models") + post("/v1/messages", MESSAGES)))
    assert_models(conn.read())
    assert_message(conn.read())
    assert_chat(conn.ask(post()))           # and the connection goes on


def test_a_request_pipelined_behind_a_stream_is_answered_after_the_stream_ends(conn):
    answer = conn.ask(post(body={**CHAT, "stream": True}) + post("/v1/messages", MESSAGES))
    assert answer.status == 200 and answer.body.endswith(b"data: [DONE]\n\n") and answer.chunks[-1] == b"", answer
    assert_message(conn.read())


def test_a_request_split_into_many_small_sends_is_answered(conn):
    head, body = head_and_body(post())
    for i in range(6):                      # "POST /" a byte at a time
        conn.send(head[i:i + 1])
        time.sleep(0.02)
    conn.send(head[6:20])
    time.sleep(0.02)
    conn.send(head[20:])
    third = len(body) // 3
    for piece in (body[:third], body[third:2 * third], body[2 * third:]):
        time.sleep(0.02)
        conn.send(piece)
    assert_chat(conn.read())


# --- chunked bodies, streams, 100-continue -------------------------------------------------

def chunked(request: bytes, sizes=(7, 20)) -> bytes:
    """The same request with its body sent as chunks of ``sizes`` (and the rest) instead of a length."""
    head, body = head_and_body(request)
    head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length"))
    head = head.rstrip(b"\r\n") + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    out, start = [], 0
    for size in (*sizes, len(body)):
        piece = body[start:start + size]
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        start += size
    return head + b"".join(out) + b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_chunked_request_body_is_answered(conn, path):
    body = CHAT if path == "/v1/chat/completions" else MESSAGES
    answer = conn.ask(chunked(post(path, body)))
    (assert_chat if path == "/v1/chat/completions" else assert_message)(answer)
    assert_chat(conn.ask(post()))           # the chunked body was consumed exactly: the next request parses


def test_a_stream_is_chunked_event_stream_ending_in_done_and_the_connection_goes_on(conn):
    answer = conn.ask(post(body={**CHAT, "stream": True}))
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("text/event-stream"), answer
    assert answer.headers["transfer-encoding"].lower() == "chunked" and "content-length" not in answer.headers
    assert answer.chunks[-1] == b"" and all(answer.chunks[:-1]), answer.chunks
    events = [e for e in answer.body.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]", events
    text = "".join(json.loads(e[len("data: "):])["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == ECHOED
    assert_chat(conn.ask(post()))


def test_an_anthropic_stream_ends_with_message_stop_and_the_connection_goes_on(conn):
    answer = conn.ask(chunked(post("/v1/messages", {**MESSAGES, "stream": True})))
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream"), answer
    assert answer.chunks[-1] == b"", answer.chunks
    events = [e for e in answer.body.decode().split("\n\n") if e]
    assert events[0].startswith("event: message_start") and events[-1].startswith("event: message_stop"), events
    assert_message(conn.ask(post("/v1/messages", MESSAGES)))


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_expect_100_continue_is_answered_before_the_body_is_sent(conn, path):
    head, body = head_and_body(post(path, ERROR_SHAPE[path][1], extra=b"Expect: 100-continue\r\n"))
    interim = conn.ask(head)
    assert (interim.version, interim.status) == ("HTTP/1.1", 100), interim
    (assert_chat if path == "/v1/chat/completions" else assert_message)(conn.ask(body))
    assert_chat(conn.ask(post()))


def test_expect_100_continue_with_a_body_over_the_limit_gets_the_413_instead_of_100(conn):
    head, _ = head_and_body(post(body=b"x" * (MAX_BODY + 1), extra=b"Expect: 100-continue\r\n"))
    openai_error(conn.ask(head), 413)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_expectation_other_than_100_continue_is_417_in_the_paths_shape_and_the_connection_ends(gw, conn, path):
    shape, body = ERROR_SHAPE[path]
    head, _ = head_and_body(post(path, body, extra=b"Expect: 200-ok-please\r\n"))
    answer = conn.ask(head)       # the body is not sent: the refusal does not wait for it
    error = shape(answer, 417)
    assert error["type"] == "invalid_request_error" and "100-continue" in error["message"], error
    assert "200-ok-please" not in answer.body.decode()     # a client's header is never echoed
    # answered before its body: whether that body still comes is the client's, so the connection ends
    assert answer.headers.get("connection") == "close", answer
    assert conn.closed_by_server()
    serves(gw)


# --- what does not match a data route exactly -------------------------------------------------

def test_a_query_string_on_a_data_route_is_served(conn):
    assert_chat(conn.ask(post("/v1/chat/completions?x=1")))
    assert_message(conn.ask(post("/v1/messages?beta=true", MESSAGES)))


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "/v1/messages/"])
def test_a_trailing_slash_is_404_in_the_paths_shape_and_the_connection_goes_on(conn, path):
    error = ERROR_SHAPE[path.rstrip("/")][0](conn.ask(post(path, ERROR_SHAPE[path.rstrip("/")][1])), 404)
    assert path in error["message"], error
    assert_chat(conn.ask(post()))


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_get_on_a_data_route_is_405_in_the_paths_shape_and_the_connection_goes_on(conn, path):
    answer = conn.ask(get(path))
    ERROR_SHAPE[path][0](answer, 405)
    assert answer.headers["allow"] == "POST", answer
    assert_chat(conn.ask(post()))


# --- closing ----------------------------------------------------------------------------------

def test_connection_close_is_answered_and_then_closed(conn):
    answer = conn.ask(post(extra=b"Connection: close\r\n"))
    assert_chat(answer)
    assert answer.headers.get("connection", "").lower() == "close", answer
    assert conn.closed_by_server()


def test_http_1_0_without_keep_alive_is_answered_and_closed(conn):
    assert_chat(conn.ask(post(version=b"HTTP/1.0")))
    assert conn.closed_by_server()


def test_http_1_0_with_keep_alive_is_kept_alive(conn):
    for _ in range(2):
        answer = conn.ask(post(version=b"HTTP/1.0", extra=b"Connection: keep-alive\r\n"))
        assert_chat(answer)
        assert answer.headers.get("connection", "").lower() == "keep-alive", answer


LEADING = ("x-request-id", "x-fastinfer-replica", "x-fastinfer-attempts", "x-fastinfer-overhead-ms")


@pytest.mark.parametrize("version,stream", [(b"HTTP/1.1", False), (b"HTTP/1.1", True), (b"HTTP/1.0", False),
                                            (b"HTTP/1.0", True)])
def test_a_data_answer_leads_with_its_id_replica_attempts_and_overhead_once_each(gw, version, stream):
    """The fields every data answer carries, written by the compiled head (HTTP/1.1) or by aiohttp
    from the same values (HTTP/1.0): each once, the client's id kept, the overhead in milliseconds
    with three decimals."""
    body = {**CHAT, "stream": True} if stream else CHAT
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(post(body=body, version=version, extra=b"x-request-id: client-id-7\r\nConnection: close\r\n"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == f"{version.decode()} 200 OK", answer[:500]
    fields = [line.split(": ", 1) for line in lines[1:]]
    names = [name.lower() for name, _ in fields]
    assert [names.count(name) for name in LEADING] == [1, 1, 1, 1], head
    values = {name.lower(): value for name, value in fields}
    assert values["x-request-id"] == "client-id-7"
    assert values["x-fastinfer-attempts"] == "1" and values["x-fastinfer-replica"] == "r0"
    assert re.fullmatch(r"\d+\.\d{3}", values["x-fastinfer-overhead-ms"]), values
    assert (b"data: [DONE]" in rest) if stream else json.loads(rest)["object"] == "chat.completion"


# --- malformed bytes after a good request ----------------------------------------------------

NOT_HTTP = b"THIS IS NOT HTTP\r\n\r\n"


def assert_malformed_400_then_closed(conn: Conn) -> None:
    error = openai_error(conn.read(), 400)
    assert error["type"] == "invalid_request_error" and error["message"].startswith("Malformed HTTP request"), error
    assert conn.closed_by_server()


def test_malformed_bytes_after_an_answered_request_get_a_json_400_and_a_close(gw, conn):
    assert_chat(conn.ask(post()))
    conn.send(NOT_HTTP)
    assert_malformed_400_then_closed(conn)
    serves(gw)


def test_a_good_request_pipelined_before_malformed_bytes_is_answered_before_the_400(conn):
    assert_chat(conn.ask(post() + NOT_HTTP))
    assert_malformed_400_then_closed(conn)


# --- body timeout, body too large -------------------------------------------------------------

# a query string takes a data route the long way, through aiohttp's application: both ways answer alike
DATA_PATHS = ["/v1/chat/completions", "/v1/messages", "/v1/chat/completions?x=1", "/v1/messages?beta=true"]


@pytest.mark.parametrize("path", DATA_PATHS)
def test_a_body_shorter_than_its_content_length_is_408_after_the_body_timeout(gw, conn, path):
    shape, body = ERROR_SHAPE[path.partition("?")[0]]
    request = post(path, body)
    started = time.monotonic()
    answer = conn.ask(request[:-10])
    error = shape(answer, 408)
    assert time.monotonic() - started >= BODY_TIMEOUT_S * 0.5    # the timeout, not an early refusal
    assert error["type"] == "invalid_request_error", error
    # the body's rest may still come: the connection cannot carry another request, and says so
    assert answer.headers.get("connection") == "close", answer
    serves(gw)


@pytest.mark.parametrize("path", DATA_PATHS)
def test_a_chunked_body_cut_short_is_408_and_the_connection_closes(gw, conn, path):
    shape, body = ERROR_SHAPE[path.partition("?")[0]]
    error = shape(conn.ask(chunked(post(path, body))[:-20]), 408)     # the last chunks never come
    assert error["type"] == "invalid_request_error", error
    assert conn.closed_by_server()     # no half-read chunk is taken for the next request's start
    serves(gw)


@pytest.mark.parametrize("path", DATA_PATHS)
def test_a_gzip_body_that_is_not_gzip_is_400_and_the_connection_closes_without_a_traceback(gw, conn, path):
    shape, _ = ERROR_SHAPE[path.partition("?")[0]]
    garbage = b"not gzip at all, " * 8
    answer = conn.ask(post(path, garbage, extra=b"Content-Encoding: gzip\r\n"))
    error = shape(answer, 400)
    assert "could not be decoded" in error["message"], error
    # the request's framing is lost with its body: the connection ends, and the answer says so
    assert answer.headers.get("connection") == "close", answer
    assert conn.closed_by_server()
    serves(gw)
    assert "Traceback" not in gw.stderr() and "Unhandled exception" not in gw.stderr()


@pytest.mark.parametrize("coding", ["br", "zstd"])
@pytest.mark.parametrize("path", DATA_PATHS)
def test_a_body_coding_the_gateway_cannot_read_is_415_naming_what_it_reads(gw, conn, path, coding):
    if {"br": http_parser.HAS_BROTLI, "zstd": http_parser.HAS_ZSTD}[coding]:
        pytest.skip(f"this environment has the package that decodes {coding}")
    body = ERROR_SHAPE[path.partition("?")[0]][1]
    answer = conn.ask(post(path, body, extra=b"Content-Encoding: %s\r\n" % coding.encode()))
    error = openai_error(answer, 415)      # refused with the head, before aiohttp hands on its path
    assert "gzip" in error["message"] and "install" not in error["message"], error
    assert answer.headers.get("accept-encoding") == "gzip, deflate", answer
    assert conn.closed_by_server()         # aiohttp's parser stopped at the head: no next request on it
    serves(gw)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent(gw, conn, path):
    shape, _ = ERROR_SHAPE[path]
    big = b"x" * (MAX_BODY + 1)
    head, _ = head_and_body(post(path, big))
    error = shape(conn.ask(head), 413)      # the body is never sent: the answer must not wait for it
    # each API's word for it: OpenAI's invalid_request_error (code request_too_large), Anthropic's request_too_large
    assert error["type"] == ("request_too_large" if path == "/v1/messages" else "invalid_request_error"), error
    assert str(MAX_BODY) in error["message"], error
    # Either the server closes now, or it discards the announced body and serves the next
    # request; the body's bytes are never taken for a request of their own.
    try:
        answer = conn.ask(big + post())
    except (ConnectionError, OSError):
        answer = None
    if answer is not None:
        assert_chat(answer)
    serves(gw)


# --- clients that leave -----------------------------------------------------------------

def test_a_client_that_sends_half_a_body_and_closes_does_not_disturb_the_server(gw):
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)):
        request = post(path, body)
        with Conn(gw.port) as conn:
            conn.send(request[:len(request) - len(json.dumps(body)) // 2])
    serves(gw)
    assert "Traceback" not in gw.stderr()


@pytest.mark.parametrize("read_head", [False, True], ids=["before-reading", "mid-stream"])
def test_a_client_that_closes_during_its_stream_does_not_disturb_the_server(gw, read_head):
    with Conn(gw.port) as conn:
        conn.send(post(body={"model": "slow", "stream": True, "messages": [{"role": "user", "content": "go"}]}))
        if read_head:                        # the stream has begun: ~4 s of tokens are still to come
            while b"data: " not in conn.buf:
                conn._fill()
            assert conn.buf.startswith(b"HTTP/1.1 200"), conn.buf
    serves(gw)
    with Conn(gw.port) as conn:              # and a stream on a fresh connection runs to its end
        answer = conn.ask(post(body={**CHAT, "stream": True}))
    assert answer.status == 200 and answer.body.endswith(b"data: [DONE]\n\n"), answer
    assert "Traceback" not in gw.stderr()


# --- headers ---------------------------------------------------------------------------------

def test_header_names_in_any_case_and_repeated_harmless_headers_are_served(conn):
    body = json.dumps(CHAT).encode()
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHOST: 127.0.0.1\r\nAUTHORIZATION: Bearer %s\r\n"
              b"Content-TYPE: application/json\r\nAccept: */*\r\naccept: application/json\r\n"
              b"X-Trace-Note: one\r\nX-Trace-Note: two\r\nCONTENT-LENGTH: %d\r\n\r\n%s"
              % (KEY.encode(), len(body), body))
    assert_chat(conn.read())
    body = json.dumps(MESSAGES).encode()     # the Anthropic SDK's key header, upper-cased
    conn.send(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-KEY: %s\r\nANTHROPIC-VERSION: 2023-06-01\r\n"
              b"content-length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body))
    assert_message(conn.read())


def test_a_clients_request_id_is_echoed_and_an_unusable_one_replaced(conn):
    answer = conn.ask(post(extra=b"X-Request-Id: client-id-42\r\n"))
    assert_chat(answer)
    assert answer.headers["x-request-id"] == "client-id-42"
    # an error answer keeps it too
    answer = conn.ask(post("/v1/messages/", MESSAGES, extra=b"x-request-id: client-id-43\r\n"))
    anthropic_error(answer, 404)
    assert answer.headers["x-request-id"] == "client-id-43"
    too_long = b"r" * 200
    answer = conn.ask(post(extra=b"X-Request-Id: " + too_long + b"\r\n"))
    assert_chat(answer)
    assert answer.headers["x-request-id"] not in ("", too_long.decode()), answer
    first = conn.ask(post()).headers["x-request-id"]     # generated ids differ from one request to the next
    assert conn.ask(post()).headers["x-request-id"] != first


# --- gateway keys ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_request_without_a_key_is_401_and_the_connection_stays_usable(conn, path):
    shape, body = ERROR_SHAPE[path]
    assert shape(conn.ask(post(path, body, auth=b"")), 401)["type"] == "authentication_error"
    error = shape(conn.ask(post(path, body, auth=b"Authorization: Bearer sk-not-the-key\r\n")), 401)
    assert "sk-not-the-key" not in json.dumps(error), error
    (assert_chat if path == "/v1/chat/completions" else assert_message)(conn.ask(post(path, body)))


# --- the idle keep-alive timeout (its own gateway: a short timeout would cut other tests) ----

KEEPALIVE_S = 1.0
KEEPALIVE_CONFIG = f"""
    [server]
    keepalive_timeout_s = {KEEPALIVE_S}
    client_body_timeout_s = 30
""" + mock_deployment("echo", "tokens = 3") + mock_deployment("late", f"tokens = 3, ttft_ms = {KEEPALIVE_S * 3000:.0f}")


@pytest.fixture(scope="module")
def idle_gw(tmp_path_factory):
    yield from gateway(tmp_path_factory, "keepalive", KEEPALIVE_CONFIG)


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(idle_gw):
    with Conn(idle_gw.port) as conn:
        assert_chat(conn.ask(post(auth=b"")))
        assert conn.closed_by_server()       # within TIMEOUT_S, long after the 1 s timeout
    with Conn(idle_gw.port) as conn:         # one that never sent a byte
        assert conn.closed_by_server()


def test_a_connection_mid_request_is_not_cut_by_the_keepalive_timeout(idle_gw):
    with Conn(idle_gw.port) as conn:
        request = post(auth=b"")
        conn.send(request[:-10])                 # head complete, the body's end comes after the idle timeout
        time.sleep(KEEPALIVE_S * 2.5)
        assert_chat(conn.ask(request[-10:]))
        answer = conn.ask(post(auth=b"", body={**CHAT, "model": "late"}))   # an answer slower than the idle timeout
        assert answer.status == 200 and answer.json()["model"] == "late", answer
        assert_chat(conn.ask(post(auth=b"")))   # and the connection is still kept alive after it
