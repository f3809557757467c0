"""The request-head scanner (``fastinfer._core.heads``) and its pure-Python reference.

Owns: that the compiled scanner and the reference give the same answer for any head, and that
every head they read is one llhttp (httptools, what the general path and aiohttp use) reads the
same way: the same target, fields, body length and keep-alive. A head outside the subset is
``None``, which sends it down the general path.

Must not touch: sockets, asyncio; ``tests/test_direct_connection.py`` drives the connection.
"""
from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings, strategies as st

from fastinfer._core import heads as compiled
from fastinfer._core.ref import heads as reference


@pytest.fixture(params=[compiled, reference], ids=["compiled", "reference"])
def m(request):
    return request.param


def _head(*lines: str, request_line: str = "POST /v1/chat/completions HTTP/1.1") -> bytes:
    return ("\r\n".join((request_line, *lines)) + "\r\n\r\n").encode("latin-1")


def _read(m, head: bytes, rest: bytes = b""):
    return m.plain_post(head + rest, len(head))


def test_a_plain_head_is_read_in_order_with_its_length_and_keep_alive(m):
    head = _head("Host: 127.0.0.1:8080", "Content-Type: application/json", "Authorization:  Bearer k \t",
                 "Content-Length: 0042")
    assert _read(m, head, b"{}") == ("/v1/chat/completions",
                                     [("Host", "127.0.0.1:8080"), ("Content-Type", "application/json"),
                                      ("Authorization", "Bearer k \t"), ("Content-Length", "0042")], 42, True)


def test_no_fields_and_no_length_is_an_empty_body(m):
    assert _read(m, _head()) == ("/v1/chat/completions", [], 0, True)


@pytest.mark.parametrize("value, keep_alive", [("close", False), ("Keep-Alive", True), ("CLOSE", False)])
def test_connection_keep_alive_or_close(m, value, keep_alive):
    assert _read(m, _head(f"Connection: {value}"))[3] is keep_alive


def test_a_second_connection_field_is_left_to_llhttp(m):
    assert _read(m, _head("Connection: close", "Connection: keep-alive")) is None


@pytest.mark.parametrize("head", [
    _head(request_line="GET /v1/chat/completions HTTP/1.1"),
    _head(request_line="POST /v1/chat/completions HTTP/1.0"),
    _head(request_line="POST /v1/chat/completions?x=1 HTTP/1.1"),
    _head(request_line="POST http://h/v1/chat/completions HTTP/1.1"),
    _head(request_line="POST  /v1/chat/completions HTTP/1.1"),
    _head("Transfer-Encoding: chunked"),
    _head("content-encoding: gzip"),
    _head("Expect: 100-continue"),
    _head("Upgrade: websocket", "Connection: upgrade"),
    _head("Connection: upgrade"),
    _head("Connection: keep-alive, close"),
    _head("Content-Length: 1", "Content-Length: 1"),
    _head("Content-Length: -1"),
    _head("Content-Length: 1 2"),
    _head("Content-Length: 12 "),
    _head("Connection: close "),
    _head("Content-Length: "),
    _head("Content-Length: 1234567890123456789"),
    _head("Host : x"),
    _head(" Host: x"),
    _head("Ho\x7fst: x"),
    _head(": x"),
    _head("Host"),
    _head("X-Name: caf\xe9"),
    _head("X-Name: a\x00b"),
    _head("X-Name: a\rb"),
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
], ids=lambda h: repr(h)[:60])
def test_a_head_outside_the_subset_is_left_to_llhttp(m, head):
    assert _read(m, head) is None


def test_a_head_length_that_does_not_end_at_an_empty_line_is_refused(m):
    head = _head("Host: x")
    assert m.plain_post(head, len(head) - 1) is None
    assert m.plain_post(head, len(head) + 10) is None
    assert m.plain_post(head, 3) is None


def _llhttp(head: bytes):
    """What llhttp reads of ``head``: (target, fields, length, keep-alive), method and version."""
    class Fields:
        def __init__(self):
            self.url, self.fields, self.keep_alive = b"", [], None

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

        def on_headers_complete(self):
            # asked here: once a request without a body is complete, llhttp says keep-alive whatever it said
            self.keep_alive = parser.should_keep_alive()

    fields = Fields()
    parser = httptools.HttpRequestParser(fields)
    parser.feed_data(head)
    length = [v for n, v in fields.fields if n.lower() == "content-length"]
    assert parser.get_method() == b"POST" and parser.get_http_version() == "1.1"
    return fields.url.decode(), fields.fields, int(length[0]) if length else 0, fields.keep_alive


_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_names = st.one_of(st.sampled_from(["Host", "Content-Type", "Content-Length", "content-length", "Connection",
                                    "Authorization", "Transfer-Encoding", "Expect", "X-Request-Id"]),
                   st.text(_TCHAR, min_size=1, max_size=12))
_values = st.one_of(st.sampled_from(["0", "17", "close", "keep-alive", "Keep-Alive", "chunked", " 5 ", "", "\t"]),
                    st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=16))
_targets = st.one_of(st.sampled_from(["/v1/chat/completions", "/v1/messages", "/", "/a?b", "/a b"]),
                     st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20))
_methods = st.sampled_from(["POST", "POST", "POST", "GET", "post"])
_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
_separators = st.sampled_from([": ", ":", ":  ", " : ", ":\t"])


@st.composite
def heads(draw) -> bytes:
    lines = [f"{draw(_methods)} {draw(_targets)} {draw(_versions)}"]
    for _ in range(draw(st.integers(0, 6))):
        lines.append(f"{draw(_names)}{draw(_separators)}{draw(_values)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@settings(max_examples=600, deadline=None)
@given(heads(), st.binary(max_size=8))
def test_compiled_equals_reference_and_what_it_reads_llhttp_reads_alike(head, rest):
    end = head.find(b"\r\n\r\n") + 4      # the first empty line, as the connection finds it
    got = compiled.plain_post(head + rest, end)
    assert got == reference.plain_post(head + rest, end)
    if got is not None:
        assert got == _llhttp(head[:end])


def _plain_fields(draw, names: list[str]) -> list[str]:
    """Field lines in the subset: ``names`` with visible-ASCII values, and maybe one ``Connection``."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        value = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12))
        lines.append(f"{draw(st.sampled_from(names))}{draw(_separators.filter(lambda sep: sep != ' : '))}{value}")
    if draw(st.booleans()):
        lines.append(f"Connection: {draw(st.sampled_from(['close', 'keep-alive', 'Keep-Alive']))}")
    return lines


@st.composite
def plain_heads(draw) -> bytes:
    """Heads in the subset: read by the scanner, so all three readers are compared on what they return."""
    lines = [f"POST {draw(st.sampled_from(['/v1/chat/completions', '/v1/messages', '/']))} HTTP/1.1"]
    lines += _plain_fields(draw, ["Host", "Content-Type", "Authorization", "X-Request-Id", "User-Agent"])
    if draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), f"Content-Length: {draw(st.integers(0, 10**6))}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@settings(max_examples=500, deadline=None)
@given(plain_heads(), st.binary(max_size=8))
def test_a_plain_head_is_read_the_same_by_the_scanner_its_twin_and_llhttp(head, rest):
    got = compiled.plain_post(head + rest, len(head))
    assert got is not None
    assert got == reference.plain_post(head + rest, len(head)) == _llhttp(head)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_before_the_empty_line_agree(noise):
    head = b"POST /v1/messages HTTP/1.1\r\n" + noise + b"\r\n\r\n"
    end = head.find(b"\r\n\r\n") + 4
    got = compiled.plain_post(head, end)
    assert got == reference.plain_post(head, end)
    if got is not None:
        assert got == _llhttp(head[:end])


# ------------------------------------------------------------ whole_response

def test_a_whole_plain_answer_is_read_with_lowered_names_and_trimmed_values(m):
    answer = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type:application/json\r\nX-Thing:  spaced \t\r\n"
              b"Content-Length: 2\r\n\r\n{}")
    assert m.whole_response(answer) == (200, {"server": "nginx", "content-type": "application/json",
                                              "x-thing": "spaced", "content-length": "2"}, len(answer) - 2, True)
    assert m.whole_response(answer.replace(b"Server: nginx", b"Connection: close"))[3] is False


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}",                 # the body not all here
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{}",                 # more than the body
    b"HTTP/1.1 200 OK\r\n\r\n{}",                                        # no length: until close
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 20x OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: caf\xc3\xa9\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nUpgrade: h2c\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n folded\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0",
], ids=lambda a: repr(a)[:50])
def test_any_other_answer_is_left_to_llhttp(m, answer):
    assert m.whole_response(answer) is None


_answer_names = st.sampled_from(["Content-Type", "Content-Length", "content-length", "Connection", "Server",
                                 "Transfer-Encoding", "Upgrade", "X-Request-Id", "Bad Name"])
_answer_values = st.one_of(st.sampled_from(["0", "2", "close", "keep-alive", " 2 ", "", "chunked"]),
                           st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=10))


@st.composite
def answers(draw) -> bytes:
    status = draw(st.sampled_from(["200", "204", "304", "429", "500", "101", "2000", "abc"]))
    lines = [f"{draw(st.sampled_from(['HTTP/1.1', 'HTTP/1.0']))} {status} {draw(st.sampled_from(['OK', '', 'A b']))}"]
    for _ in range(draw(st.integers(0, 5))):
        lines.append(f"{draw(_answer_names)}{draw(_separators)}{draw(_answer_values)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + draw(st.binary(max_size=3))


@settings(max_examples=600, deadline=None)
@given(answers())
def test_whole_response_compiled_equals_reference(answer):
    assert compiled.whole_response(answer) == reference.whole_response(answer)


# ------------------------------------------------------------ answer_head

def test_an_answer_head_has_its_fields_in_order_then_the_tail_length_and_connection(m):
    head = m.answer_head(b"HTTP/1.1 200 OK\r\n", {"x-request-id": "r1", "x-note": "caf\xe9\tok"},
                         b"Server: s\r\nDate: d\r\n", 12, False)
    assert head == (b"HTTP/1.1 200 OK\r\nx-request-id: r1\r\nx-note: caf\xc3\xa9\tok\r\nServer: s\r\nDate: d\r\n"
                    b"Content-Length: 12\r\nConnection: close\r\n\r\n")
    assert m.answer_head(b"HTTP/1.1 204 No Content\r\n", {}, b"", -1, True) == b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize("headers", [{"x-id": "a\r\nSet-Cookie: x"}, {"x-id\n": "a"}, {"x-id": "a\x00"},
                                     {"x-id": "\x7f"}])
def test_a_control_character_in_an_answer_field_is_refused(m, headers):
    with pytest.raises(ValueError, match="Forbidden control character"):
        m.answer_head(b"HTTP/1.1 200 OK\r\n", headers, b"", 0, True)


def test_an_answer_head_takes_a_multidict_of_istr_names_as_aiohttp_responses_have(m):
    from multidict import CIMultiDict, istr
    headers = CIMultiDict([(istr("Retry-After"), "3"), ("x-a", "1"), ("x-a", "2")])
    assert m.answer_head(b"HTTP/1.1 429 Too Many Requests\r\n", headers, b"", 0, True) == (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nx-a: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")


def test_a_field_that_is_not_a_string_is_refused(m):
    with pytest.raises(TypeError):
        m.answer_head(b"HTTP/1.1 200 OK\r\n", {"x-attempts": 1}, b"", 0, True)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6), st.integers(-1, 10**12),
       st.booleans())
def test_answer_head_compiled_equals_reference(headers, length, keep_alive):
    def head(module):
        try:
            return module.answer_head(b"HTTP/1.1 429 Too Many Requests\r\n", headers, b"Date: d\r\n", length,
                                      keep_alive)
        except (ValueError, UnicodeEncodeError) as e:
            return type(e)
    assert head(compiled) == head(reference)


def test_an_answer_head_refuses_a_control_character_at_any_offset_of_a_long_value(m):
    """The compiled check reads eight bytes a step: a control byte in the first, a middle or the
    last word, or in the tail after the words, is found alike; a tab and UTF-8 are not refused."""
    for code in [*range(0x20), 0x7F]:
        for offset in (0, 7, 8, 15, 16, 18):
            value = "a" * offset + chr(code) + "b" * (18 - offset)
            if code == 0x09:
                assert m.answer_head(b"HTTP/1.1 200 OK\r\n", {"x": value}, b"", -1, True).count(b"\t") == 1
            else:
                with pytest.raises(ValueError):
                    m.answer_head(b"HTTP/1.1 200 OK\r\n", {"x": value}, b"", -1, True)
    m.answer_head(b"HTTP/1.1 200 OK\r\n", {"x": "caf\xe9 \u65e5\u672c \U0001f389 ~"}, b"", -1, True)


@pytest.mark.parametrize("length", [0, 9, 10, 99, 100, 65535, 10**12, 2**63 - 1])
def test_an_answer_heads_content_length_is_the_decimal_of_any_length(m, length):
    head = m.answer_head(b"HTTP/1.1 200 OK\r\n", {}, b"", length, True)
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


OK_LINE = b"HTTP/1.1 200 OK\r\n"
LEADING_NAMES = (b"x-request-id: ", b"x-attempts: ", b"x-overhead-ms: ")


def test_leading_fields_come_first_as_text_an_int_and_a_float_with_three_decimals(m):
    head = m.answer_head(OK_LINE, {"x-more": "m"}, b"Server: s\r\n", 2, True, LEADING_NAMES,
                         ("caf\xe9-1", 12, 0.0625))
    assert head == (OK_LINE + "x-request-id: caf\xe9-1\r\n".encode() + b"x-attempts: 12\r\nx-overhead-ms: 0.062\r\n"
                    b"x-more: m\r\nServer: s\r\nContent-Length: 2\r\n\r\n")


def test_a_dated_head_has_aiohttps_date_of_now_after_the_tail(m):
    from aiohttp.helpers import rfc822_formatted_time
    for _ in range(3):      # a second may turn between the two readings: then once more
        before = rfc822_formatted_time()
        head = m.answer_head(OK_LINE, {}, b"Server: s\r\n", 0, False, (), (), True)
        if rfc822_formatted_time() == before:
            break
    assert head == OK_LINE + b"Server: s\r\nDate: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
        before.encode())


@pytest.mark.parametrize("names,values,error", [
    ((b"x-a: ",), (True,), TypeError),                  # a bool is not written as a number
    ((b"x-a: ",), (None,), TypeError),
    ((b"x-a: ",), (b"bytes",), TypeError),
    (("x-a: ",), ("v",), TypeError),                    # a name is bytes, encoded by the caller
    ((b"x-a: ",), (float("nan"),), ValueError),
    ((b"x-a: ",), (1e20,), ValueError),
    ((b"x-a: ",), (-float("inf"),), ValueError),
    ((b"x-a: ",), (2**63,), OverflowError),
    ((b"x-a: ",), ("a\r\nInjected: 1",), ValueError),
    ((b"x-a\r\nInjected: 1\r\nx-b: ",), ("v",), ValueError),
    ((b"x-a: ", b"x-b: "), ("v",), ValueError),          # one value per name
    ((b"x-a: ",) * 9, ("v",) * 9, ValueError),           # at most eight
])
def test_a_leading_field_that_cannot_be_written_as_said_is_refused(m, names, values, error):
    with pytest.raises(error):
        m.answer_head(OK_LINE, {}, b"", 0, True, names, values)


_LEADING_VALUES = st.one_of(st.text(max_size=16), st.integers(-2**63, 2**63 - 1),
                            st.floats(min_value=-1e19, max_value=1e19, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(_LEADING_VALUES, max_size=8), st.dictionaries(st.text(max_size=6), st.text(max_size=8), max_size=3),
       st.booleans())
def test_a_head_with_leading_fields_compiled_equals_reference(values, headers, keep_alive):
    names = tuple(b"x-%d: " % i for i in range(len(values)))

    def head(module):
        try:
            return module.answer_head(OK_LINE, headers, b"Server: s\r\n", 7, keep_alive, names, tuple(values))
        except (ValueError, UnicodeEncodeError) as e:
            return type(e)
    written = head(compiled)
    assert written == head(reference)
    if isinstance(written, bytes):
        for value in values:
            if type(value) is float:
                assert f"{value:.3f}".encode() in written


@st.composite
def plain_answers(draw) -> bytes:
    """Answers in the subset: read whole by both, so the two are compared on what they return."""
    status = draw(st.sampled_from(["200", "201", "400", "429", "500", "503"]))
    lines = [f"HTTP/1.1 {status} {draw(st.sampled_from(['OK', '', 'Too Many Requests']))}"]
    lines += _plain_fields(draw, ["Content-Type", "Server", "X-Request-Id", "Date", "x-ratelimit-remaining"])
    body = draw(st.binary(max_size=8))
    lines.insert(draw(st.integers(1, len(lines))), f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@settings(max_examples=500, deadline=None)
@given(plain_answers())
def test_a_plain_answer_is_read_whole_the_same_by_both(answer):
    got = compiled.whole_response(answer)
    assert got is not None and got == reference.whole_response(answer)
    assert answer[got[2]:] == answer[answer.index(b"\r\n\r\n") + 4:]


# ------------------------------------------------------------ chunked answers: the head, then the body

def test_a_chunked_head_is_read_and_leaves_its_body_to_the_caller(m):
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding:  Chunked \r\n\r\n"
              b"5\r\nhello\r\n")
    assert m.chunked_head(answer) == (200, {"content-type": "text/event-stream", "transfer-encoding": "Chunked"},
                                      answer.index(b"5\r\n"), True)
    assert m.chunked_head(answer.replace(b"Content-Type: text/event-stream", b"Connection: close"))[3] is False
    assert m.whole_response(answer) is None


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",                               # not chunked
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",   # both: llhttp refuses it
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",                                  # the head not all here
    b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\n\r\n",
], ids=lambda a: repr(a)[:60])
def test_any_other_head_is_left_to_llhttp(m, answer):
    assert m.chunked_head(answer) is None


class _LLHttpAnswer:
    """What llhttp reads of an answer: its head, its body's pieces, whether it ended."""

    def __init__(self):
        self.headers, self.body, self.complete, self.keep_alive, self.parser = {}, [], False, None, None

    def on_header(self, name, value):
        self.headers[name.decode().lower()] = value.decode().strip(" \t")

    def on_body(self, body):
        self.body.append(bytes(body))

    def on_message_complete(self):
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()    # asked now: llhttp forgets it after the end


def _llhttp_answer(pieces):
    """llhttp's reading of an answer fed in ``pieces``: (status, headers, keep-alive, body, complete),
    or the error it stopped at."""
    answer = _LLHttpAnswer()
    parser = answer.parser = httptools.HttpResponseParser(answer)
    try:
        for piece in pieces:
            parser.feed_data(piece)
    except httptools.HttpParserError as e:
        return "error", b"".join(answer.body), str(e)
    return parser.get_status_code(), answer.headers, answer.keep_alive, b"".join(answer.body), answer.complete


@settings(max_examples=300, deadline=None)
@given(answers())
def test_an_answers_fields_are_true_when_they_hold_a_field_in_both(answer):
    """Truth is asked of every stream's fields (``UpstreamReply``): it is the dict's they equal."""
    for m in (compiled, reference):
        for read in (m.whole_response(answer), m.chunked_head(answer)):
            if read is not None:
                fields = read[1]
                assert bool(fields) is bool(dict(fields.items())) is (len(fields) > 0)


@settings(max_examples=400, deadline=None)
@given(answers())
def test_chunked_head_compiled_equals_reference_and_llhttp_reads_what_it_reads_alike(answer):
    got = compiled.chunked_head(answer)
    assert got == reference.chunked_head(answer)
    if got is not None:
        status, fields, body_start, keep_alive = got
        read = _llhttp_answer([answer[:body_start], b"2\r\nok\r\n0\r\n\r\n"])
        assert read == (status, fields, keep_alive, b"ok", True)


_extensions = st.sampled_from([b"", b"", b";x", b";name=value", b';q="a b"', b";a=1;b"])
_trailers = st.lists(st.sampled_from([b"X-Trailer: t", b"Checksum:abc", b"E:"]), max_size=2)


@st.composite
def chunked_bodies(draw) -> tuple[bytes, bytes]:
    """A chunked body in the subset (sizes in any case, leading zeros, extensions, trailers) and its data."""
    data = [draw(st.binary(min_size=1, max_size=40)) for _ in range(draw(st.integers(0, 6)))]
    framed = []
    for piece in data:
        size = draw(st.sampled_from(["%x", "%X", "00%x"])) % len(piece)
        framed.append(size.encode() + draw(_extensions) + b"\r\n" + piece + b"\r\n")
    framed.append(draw(st.sampled_from([b"0", b"000"])) + draw(_extensions) + b"\r\n")
    framed += [line + b"\r\n" for line in draw(_trailers)]
    framed.append(b"\r\n")
    return b"".join(framed), b"".join(data)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def _decoded(module, pieces: list[bytes]):
    """What a ``ChunkedBody`` gives for ``pieces``: each read's data, done, overflowed (or the error)."""
    body = module.ChunkedBody()
    out = []
    try:
        for piece in pieces:
            out.append(body.feed(piece))
    except ValueError as e:
        return "error", b"".join(out), str(e)
    return out, body.done, body.overflowed


_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@settings(max_examples=400, deadline=None)
@given(chunked_bodies(), st.lists(st.integers(0, 400), max_size=10), st.sampled_from([b"", b"", b"HTTP/1.1"]))
def test_a_chunked_body_is_read_alike_by_both_and_by_llhttp_however_it_is_split(body, cuts, after):
    framed, data = body
    pieces = _split(framed + after, cuts)
    got = _decoded(compiled, pieces)
    assert got == _decoded(reference, pieces)
    reads, done, overflowed = got
    assert b"".join(reads) == data and done and overflowed == bool(after)
    if not after:      # llhttp reads bytes after the end as the next answer's (and trailers as fields)
        status, _, keep_alive, llhttp_data, complete = _llhttp_answer([_CHUNKED_HEAD, *pieces])
        assert (status, keep_alive, llhttp_data, complete) == (200, True, data, True)


def test_a_read_of_many_chunks_is_one_piece_and_a_body_in_progress_is_not_done(m):
    body = m.ChunkedBody()
    assert body.feed(b"xx3\r\nabc\r\n2\r\nde\r\n1\r\nf", 2) == b"abcdef"
    assert body.feed(b"\r\n") == b"" and not body.done
    assert body.feed(b"0\r\n\r\n") == b"" and body.done and not body.overflowed
    assert body.feed(b"more") == b"" and body.overflowed


@pytest.mark.parametrize("chunks", [1, 2, 127, 128, 129, 1000])
def test_a_read_of_any_number_of_chunks_is_their_data_in_order(m, chunks):
    # a read's pieces are kept on the stack up to 128, then on the heap, growing: every piece
    # comes out once, in order, whichever
    pieces = [b"%d-" % k * (1 + k % 7) for k in range(chunks)]
    framed = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    body = m.ChunkedBody()
    assert body.feed(b"xx" + framed, 2) == b"".join(pieces) and body.done and not body.overflowed


@pytest.mark.parametrize("framed", [
    b"5 \r\nhello\r\n0\r\n\r\n",          # a space after the size
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",            # no size
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",             # a bare LF after the size
    b"5\r\r\nhello\r\n0\r\n\r\n",
    b"5\rXhello\r\n0\r\n\r\n",             # a CR and no LF after the size
    b"5\r\nhello\r\n3\r\rabc\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",             # no CR LF after the data
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhello\rX0\r\n\r\n",             # a CR and no LF after the data
    b"5;a\x01\r\nhello\r\n0\r\n\r\n",     # a control character in an extension
    b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\n",
    b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
    b"fffffffffffffffff\r\n",            # a size past 64 bits
], ids=lambda f: repr(f)[:40])
def test_framing_llhttp_refuses_is_refused(m, framed):
    assert _llhttp_answer([_CHUNKED_HEAD, framed])[0] == "error"
    for pieces in ([framed], [framed[:1], framed[1:]], [bytes([c]) for c in framed]):
        assert _decoded(m, pieces)[0] == "error"


@pytest.mark.parametrize("line_start, filler", [(b"", b"0"), (b"5;ext=", b"x"), (b"0\r\nX-Long: ", b"v")],
                         ids=["size", "extension", "trailer"])
def test_framing_that_never_ends_is_refused_once_it_passes_the_bound(m, line_start, filler):
    body = m.ChunkedBody(1024)
    assert body.feed(b"4\r\ndata\r\n" + line_start) == b"data"
    fed = 2 + len(line_start)          # framing since the data: its CR LF, then the line
    with pytest.raises(ValueError, match="overlong"):
        while fed <= 4096:
            fed += 100
            body.feed(filler * 100)
    assert 1024 < fed <= 1024 + 100


@pytest.mark.parametrize("zeros", [8186, 8187, 8188, 9000])
def test_a_size_line_read_whole_is_held_to_the_bound_as_when_read_byte_by_byte(zeros):
    """Framing since the last data: its CR LF, ``zeros`` leading zeros, the digit, CR LF. Up to the
    bound (8192) it is read, past it refused, the same whether the line comes in one read (which
    reads it in one go) or a byte a read, compiled or not."""
    framed = b"4\r\ndata\r\n" + b"0" * zeros + b"5\r\nhello\r\n0\r\n\r\n"

    def read(module, pieces):
        got = _decoded(module, pieces)
        return ("error", got[2]) if got[0] == "error" else (b"".join(got[0]), *got[1:])

    whole = read(compiled, [framed])
    assert whole == read(compiled, [bytes([c]) for c in framed]) == read(reference, [framed])
    assert whole == (("error", "overlong chunk-size line or trailer") if 2 + zeros + 3 > 8192
                     else (b"datahello", True, False))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.lists(st.integers(0, 60), max_size=4))
def test_any_bytes_are_read_alike_by_both(noise, cuts):
    pieces = _split(noise, cuts)
    assert _decoded(compiled, pieces) == _decoded(reference, pieces)


# ------------------------------------------------------------ Fields

_FIELD_NAMES = ["Host", "x-a", "X-A", "Authorization", "x-priority", "X-Session-Id", "a", "Z"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIELD_NAMES), st.text("abc xyz\t-", max_size=6).map(str.strip)),
                max_size=70),
       st.lists(st.sampled_from(_FIELD_NAMES + ["x-missing", "HOST", "x-A", "\u0130", ""]), max_size=6))
def test_a_heads_fields_answer_as_a_multidict_proxy_of_them(pairs, keys):
    """Any number of fields (past the 32 kept on the stack too), any case, repeated names: each
    lookup answers as aiohttp's ``CIMultiDictProxy`` of the same fields does, in both twins."""
    from multidict import CIMultiDict, CIMultiDictProxy
    head = ("POST /v1/chat/completions HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in pairs) + "\r\n").encode()
    proxy = CIMultiDictProxy(CIMultiDict(pairs))
    for module in (compiled, reference):
        _check_fields(module.plain_post(head, len(head))[1], proxy, pairs, keys)


def _check_fields(fields, proxy, pairs, keys):
    assert len(fields) == len(proxy) and fields.items() == list(proxy.items()) and fields == pairs
    assert fields.keys() == [n for n, _ in pairs] and fields.values() == [v for _, v in pairs]
    for key in keys:
        assert fields.get(key) == proxy.get(key) and fields.get(key, 7) == proxy.get(key, 7)
        assert (key in fields) == (key in proxy)
        assert fields.getall(key, None) == proxy.getall(key, None)
        if key in proxy:
            assert fields[key] == proxy[key]
        else:
            with pytest.raises(KeyError):
                fields[key]
            with pytest.raises(KeyError):
                fields.getall(key)


def test_fields_refuse_a_name_that_is_not_a_string_as_a_multidict_does(m):
    head = b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n"
    _, fields, _, _ = m.plain_post(head, len(head))
    for key in (1, b"Host", None):
        with pytest.raises(TypeError):
            fields.get(key)
        assert key not in fields
    assert list(fields) == ["Host"] and repr(fields) == "<Fields [('Host', 'a')]>"
    with pytest.raises(TypeError):
        hash(fields)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIELD_NAMES), st.text("abc xyz-", max_size=6).map(str.strip)),
                max_size=70),
       st.lists(st.sampled_from(_FIELD_NAMES + ["x-missing", "HOST", "retry-after"]), max_size=6))
def test_an_answers_fields_read_as_the_dict_of_their_lowered_names_the_last_winning(pairs, keys):
    """What ``whole_response`` and ``chunked_head`` give: the dict they were before (lower-cased
    names, the last of a name winning), read only when asked; any number of fields, both twins."""
    answer = ("HTTP/1.1 429 Too Many Requests\r\n" + "".join(f"{n}: {v}\r\n" for n, v in pairs)
              + "Content-Length: 2\r\n\r\nok").encode()
    expected = {n.lower(): v for n, v in [*pairs, ("Content-Length", "2")]}
    for module in (compiled, reference):
        fields = module.whole_response(answer)[1]
        assert fields == expected and expected == fields and len(fields) == len(expected)
        assert fields.items() == list(expected.items()) and fields.keys() == list(expected)
        for key in keys:
            assert fields.get(key) == expected.get(key.lower()) and (key in fields) == (key.lower() in expected)
            if key.lower() in expected:
                assert fields[key] == expected[key.lower()]
            else:
                with pytest.raises(KeyError):
                    fields[key]


@pytest.mark.parametrize("count", [31, 32, 33, 64, 65, 300])
def test_a_head_of_many_fields_keeps_every_one(m, count):
    """Past the 32 fields kept on the stack, the spans move to the heap (twice the room each time):
    every field is still where it was, in a request's head and in an answer's."""
    pairs = [(f"x-field-{i}", f"value {i}") for i in range(count)]
    lines = "".join(f"{n}: {v}\r\n" for n, v in pairs)
    request = f"POST /v1/chat/completions HTTP/1.1\r\n{lines}\r\n".encode()
    fields = m.plain_post(request, len(request))[1]
    assert fields == pairs and [fields[n] for n, _ in pairs] == [v for _, v in pairs]
    answer = f"HTTP/1.1 200 OK\r\n{lines}Content-Length: 0\r\n\r\n".encode()
    assert m.whole_response(answer)[1] == {**dict(pairs), "content-length": "0"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from([b"", b"0\r\n\r\n"]))
def test_a_framed_chunk_is_its_size_in_hex_its_data_and_what_follows_alike_in_both(data, after):
    framed = compiled.framed_chunk(data, after)
    assert framed == reference.framed_chunk(data, after)
    size, _, rest = framed.partition(b"\r\n")
    assert size == size.lower() and int(size, 16) == len(data) and (size == b"0" or not size.startswith(b"0"))
    assert rest == data + b"\r\n" + after
    line = compiled.chunk_size_line(len(data))
    assert line == reference.chunk_size_line(len(data)) == size + b"\r\n"


def test_a_framed_stream_reads_back_through_httptools_as_its_chunks():
    chunks = [b"data: {}\n\n", b"x" * 4095, b"y" * 16, b"z"]
    body = b"".join(compiled.framed_chunk(c, b"") for c in chunks[:-1]) + compiled.framed_chunk(chunks[-1],
                                                                                                  b"0\r\n\r\n")
    got, done = [], []

    class Reader:
        def on_body(self, b):
            got.append(bytes(b))

        def on_message_complete(self):
            done.append(True)

    parser = httptools.HttpResponseParser(Reader())
    parser.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert b"".join(got) == b"".join(chunks) and done == [True]


def test_a_negative_chunk_size_is_refused(m):
    with pytest.raises(ValueError):
        m.chunk_size_line(-1)


def test_the_stream_calls_refuse_none_as_they_refused_it_before_they_were_c_calls(m):
    # ``ChunkedBody.feed`` and ``framed_chunk`` are ``cpdef`` (other compiled modules call them in
    # C), where ``not None`` cannot be said in the signature: they check, and raise, themselves
    with pytest.raises(TypeError):
        m.ChunkedBody().feed(None)
    with pytest.raises(TypeError):
        m.framed_chunk(None, b"")
    with pytest.raises(TypeError):
        m.framed_chunk(b"x", None)
    body = m.ChunkedBody()
    assert body.feed(b"3\r\nabc\r\n0\r\n\r\n", 0) == b"abc" and body.done
