"""Tests of the SSE parser and writer (``fastinfer._core.sse``) and its
pure-Python reference (``fastinfer._core.ref.sse``).

Owns: conformance to the WHATWG event-stream interpretation rules, incremental
feeding (arbitrary re-chunking), agreement between the compiled parser, the
reference and an independent model, and the writer's round trip.

Must not touch: HTTP, asyncio, JSON; nothing here needs a network or a loop.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastinfer._core import sse as compiled
from fastinfer._core.ref import sse as reference

IMPLS = [compiled, reference]
IMPL_IDS = ["compiled", "reference"]

BOM = b"\xef\xbb\xbf"


@pytest.fixture(params=IMPLS, ids=IMPL_IDS)
def m(request):
    return request.param


def tup(ev):
    return (ev.event, ev.data, ev.id, ev.retry)


def feed_all(mod, chunks, close=True):
    p = mod.SSEParser()
    out = []
    for c in chunks:
        got = p.feed(c)
        assert isinstance(got, list)
        out.extend(got)
    if close:
        assert p.close() == []
    return [tup(e) for e in out], p


def parse(mod, stream: bytes):
    return feed_all(mod, [stream])[0]


def bytewise(mod, stream: bytes):
    return feed_all(mod, [stream[i:i + 1] for i in range(len(stream))])[0]


def msg(data, event="message", id=None, retry=None):
    return (event, data, id, retry)


# ------------------------------------------------------------- line endings

@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_line_endings(m, eol):
    stream = eol.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    expected = [msg(b"a\nb", "e"), msg(b"c")]
    assert parse(m, stream) == expected
    assert bytewise(m, stream) == expected


def test_mixed_line_endings(m):
    stream = b"data: a\rdata: b\r\ndata: c\n\r\n"
    assert parse(m, stream) == [msg(b"a\nb\nc")]
    assert bytewise(m, stream) == [msg(b"a\nb\nc")]


def test_crlf_split_across_feeds_is_one_line_end(m):
    p = m.SSEParser()
    assert p.feed(b"data: a\r") == []
    # if the LF counted as a second line end it would be a blank line and
    # dispatch "a" alone
    assert [tup(e) for e in p.feed(b"\ndata: b\r\n\r\n")] == [msg(b"a\nb")]


def test_crlf_split_survives_empty_chunk(m):
    p = m.SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"") == []
    assert p.feed(b"\n") == []
    assert [tup(e) for e in p.feed(b"\n")] == [msg(b"a")]


def test_cr_at_chunk_end_dispatches_without_waiting(m):
    p = m.SSEParser()
    assert [tup(e) for e in p.feed(b"data: a\r\n\r")] == [msg(b"a")]
    assert p.feed(b"\n") == []  # the LF of the CRLF, not another blank line
    assert [tup(e) for e in p.feed(b"data: b\n\n")] == [msg(b"b")]


def test_cr_cr_across_feeds_is_two_line_ends(m):
    p = m.SSEParser()
    assert p.feed(b"data: a\r") == []
    assert [tup(e) for e in p.feed(b"\rdata: b\n\n")] == [msg(b"a"), msg(b"b")]


def test_lf_after_cr_only_skipped_once(m):
    p = m.SSEParser()
    assert p.feed(b"data: a\r") == []
    assert [tup(e) for e in p.feed(b"\n\n")] == [msg(b"a")]


def test_lf_cr_is_two_line_ends(m):
    assert parse(m, b"data: a\n\rdata: b\n\n") == [msg(b"a"), msg(b"b")]


# --------------------------------------------------------------------- BOM

def test_bom_stripped(m):
    assert parse(m, BOM + b"data: a\n\n") == [msg(b"a")]


def test_bom_split_across_feeds(m):
    for chunks in ([b"\xef", b"\xbb", b"\xbf", b"data: a\n\n"],
                   [b"\xef\xbb", b"", b"\xbfdata: a\n\n"],
                   [b"\xef", b"\xbb\xbfdata: a\n\n"]):
        assert feed_all(m, chunks)[0] == [msg(b"a")], chunks


def test_bom_stripped_only_once(m):
    # the second BOM is part of the first field name: "\ufeffdata" is unknown
    assert parse(m, BOM + BOM + b"data: a\n\ndata: b\n\n") == [msg(b"b")]
    assert bytewise(m, BOM + BOM + b"data: a\n\ndata: b\n\n") == [msg(b"b")]


def test_bom_not_at_start_is_not_stripped(m):
    assert parse(m, b"data: a\n\n" + BOM + b"data: b\n\n") == [msg(b"a")]


def test_partial_bom_bytes_are_kept(m):
    # a BOM prefix that turns out not to be a BOM is data of the first line:
    # the field name becomes b"\xef\xbbdata", which is unknown
    assert feed_all(m, [b"\xef\xbb", b"data: a\n\ndata: b\n\n"])[0] == [msg(b"b")]
    assert feed_all(m, [b"\xef", b"data: a\n\ndata: b\n\n"])[0] == [msg(b"b")]
    # ... and a lone prefix followed by a line end is just an unknown field
    assert feed_all(m, [b"\xef\xbb", b"\ndata: a\n\n"])[0] == [msg(b"a")]


def test_bom_check_restarts_after_close(m):
    p = m.SSEParser()
    assert [tup(e) for e in p.feed(BOM + b"data: a\n\n")] == [msg(b"a")]
    assert p.close() == []
    assert [tup(e) for e in p.feed(BOM + b"data: b\n\n")] == [msg(b"b")]


# ------------------------------------------------------------ field parsing

def test_comments_ignored(m):
    stream = b": hello\n:data: x\ndata: a\n: more\n\n:\n\n"
    assert parse(m, stream) == [msg(b"a")]


def test_comment_only_block_does_not_dispatch(m):
    assert parse(m, b": keepalive\n\n: keepalive\n\n") == []


@pytest.mark.parametrize("line,value", [
    (b"data:a", b"a"),
    (b"data: a", b"a"),
    (b"data:  a", b" a"),
    (b"data:\ta", b"\ta"),
    (b"data: a ", b"a "),
    (b"data: a:b: c", b"a:b: c"),
    (b"data:", b""),
    (b"data: ", b""),
    (b"data", b""),
])
def test_single_optional_space_removed(m, line, value):
    assert parse(m, line + b"\n\n") == [msg(value)]


def test_empty_data_lines(m):
    assert parse(m, b"data:\ndata:\n\n") == [msg(b"\n")]
    assert parse(m, b"data\ndata\ndata\n\n") == [msg(b"\n\n")]
    assert parse(m, b"data: a\ndata:\n\n") == [msg(b"a\n")]
    assert parse(m, b"data:\ndata: a\n\n") == [msg(b"\na")]


def test_field_names_case_sensitive_and_unknown_ignored(m):
    stream = (b"Data: no\nDATA: no\n data: no\ndata : no\nfoo: bar\nevent2: x\n"
              b"retryy: 5\nid : 9\ndata: yes\n\n")
    assert parse(m, stream) == [msg(b"yes")]


def test_line_without_colon_is_field_with_empty_value(m):
    assert parse(m, b"event: x\nevent\ndata: a\n\n") == [msg(b"a", "message")]
    assert parse(m, b"id: 1\nid\ndata: a\n\n") == [msg(b"a", id="")]
    assert parse(m, b"retry\ndata: a\n\n") == [msg(b"a")]


# ---------------------------------------------------------------- event type

def test_event_type(m):
    stream = b"event: add\ndata: 1\n\nevent: remove\ndata: 2\n\ndata: 3\n\n"
    assert parse(m, stream) == [msg(b"1", "add"), msg(b"2", "remove"), msg(b"3")]


def test_event_type_last_one_wins(m):
    assert parse(m, b"event: a\nevent: b\ndata: x\n\n") == [msg(b"x", "b")]


def test_event_type_reset_on_blank_line_without_data(m):
    assert parse(m, b"event: foo\n\ndata: x\n\n") == [msg(b"x")]


def test_event_type_empty_is_message(m):
    assert parse(m, b"event:\ndata: x\n\n") == [msg(b"x")]
    assert parse(m, b"event: \ndata: x\n\n") == [msg(b"x")]


def test_event_type_keeps_spaces_beyond_the_first(m):
    assert parse(m, b"event:  a b \ndata: x\n\n") == [msg(b"x", " a b ")]


def test_event_type_invalid_utf8_replaced(m):
    assert parse(m, b"event: a\xffb\ndata: x\n\n") == [msg(b"x", "a\ufffdb")]


def test_event_type_cache_not_stale(m):
    # same length, different names, repeated: the compiled parser caches names
    stream = b"".join(b"event: %s\ndata: x\n\n" % n for n in (b"abc", b"abd", b"abc", b"abc"))
    assert [e[0] for e in parse(m, stream)] == ["abc", "abd", "abc", "abc"]


# ------------------------------------------------------------------------ id

def test_id_set_and_persists(m):
    stream = b"data: a\n\nid: 1\ndata: b\n\ndata: c\n\nid: 2\ndata: d\n\n"
    assert parse(m, stream) == [msg(b"a"), msg(b"b", id="1"), msg(b"c", id="1"),
                                msg(b"d", id="2")]


def test_id_with_nul_ignored(m):
    stream = b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"
    assert parse(m, stream) == [msg(b"a", id="1"), msg(b"b", id="1")]
    assert parse(m, b"id: \x00\ndata: a\n\n") == [msg(b"a")]


def test_id_empty_resets_to_empty_string(m):
    assert parse(m, b"id: 1\ndata: a\n\nid:\ndata: b\n\n") == [msg(b"a", id="1"),
                                                               msg(b"b", id="")]


def test_id_utf8_and_replacement(m):
    assert parse(m, "id: é🎉\ndata: a\n\n".encode()) == [msg(b"a", id="é🎉")]
    assert parse(m, b"id: a\xc3\ndata: a\n\n") == [msg(b"a", id="a\ufffd")]


def test_last_event_id_updated_on_blank_line_only(m):
    p = m.SSEParser()
    assert p.last_event_id == ""
    p.feed(b"id: 5\ndata: a\n")
    assert p.last_event_id == ""  # not dispatched yet
    p.feed(b"\n")
    assert p.last_event_id == "5"
    p.feed(b"id: 6\n")
    assert p.last_event_id == "5"
    assert p.feed(b"\n") == []  # blank line without data still updates it
    assert p.last_event_id == "6"


def test_last_event_id_of_discarded_event_not_applied(m):
    p = m.SSEParser()
    p.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    assert p.close() == []
    assert p.last_event_id == "1"


def test_last_event_id_survives_close_but_id_buffer_restarts(m):
    p = m.SSEParser()
    p.feed(b"id: 1\ndata: a\n\n")
    p.close()
    assert p.last_event_id == "1"
    # new stream: fresh last event ID buffer (spec: initialised to "")
    assert [tup(e) for e in p.feed(b"data: b\n\n")] == [msg(b"b")]
    assert p.last_event_id == ""


# --------------------------------------------------------------------- retry

def test_retry_valid(m):
    p = m.SSEParser()
    assert p.reconnection_time is None
    evs = [tup(e) for e in p.feed(b"retry: 3000\ndata: a\n\ndata: b\n\n")]
    assert evs == [msg(b"a", retry=3000), msg(b"b")]
    assert p.reconnection_time == 3000


@pytest.mark.parametrize("value", [b"1a", b"-1", b"+1", b"1.5", b"", b" 10", b"10 ",
                                   "١٢".encode(), b"0x10", b"1e3"])
def test_retry_invalid_ignored(m, value):
    p = m.SSEParser()
    evs = [tup(e) for e in p.feed(b"retry: 7\n\nretry: " + value + b"\ndata: a\n\n")]
    assert evs == [msg(b"a")]
    assert p.reconnection_time == 7


def test_retry_no_space_leading_zeros_and_big(m):
    assert parse(m, b"retry:0042\ndata: a\n\n") == [msg(b"a", retry=42)]
    assert parse(m, b"retry: 0\ndata: a\n\n") == [msg(b"a", retry=0)]
    big = b"123456789012345678901234567890"
    assert parse(m, b"retry: " + big + b"\ndata: a\n\n") == [msg(b"a", retry=int(big))]
    assert parse(m, b"retry: 999999999999999999\ndata: a\n\n") == [
        msg(b"a", retry=999999999999999999)]


def test_retry_last_valid_in_block_wins(m):
    assert parse(m, b"retry: 1\nretry: 2\nretry: x\ndata: a\n\n") == [msg(b"a", retry=2)]


def test_retry_without_data_sets_reconnection_time_only(m):
    p = m.SSEParser()
    assert p.feed(b"retry: 500\n\n") == []
    assert p.reconnection_time == 500
    assert [tup(e) for e in p.feed(b"data: a\n\n")] == [msg(b"a")]


# ------------------------------------------------------------------ dispatch

def test_blank_line_without_data_does_not_dispatch(m):
    assert parse(m, b"\n\n\n\r\n\r") == []
    assert parse(m, b"event: x\nid: 1\n\n") == []


def test_no_dispatch_without_blank_line(m):
    p = m.SSEParser()
    assert p.feed(b"data: a\n") == []
    assert p.feed(b"data: b") == []
    assert p.close() == []


def test_close_discards_pending_and_restarts(m):
    p = m.SSEParser()
    p.feed(b"event: x\ndata: a\ndata: partial")
    assert p.close() == []
    assert [tup(e) for e in p.feed(b"data: b\n\n")] == [msg(b"b")]


def test_unterminated_final_line_discarded(m):
    assert parse(m, b"data: a\n\ndata: b\n\n\ndata: c") == [msg(b"a"), msg(b"b")]


def test_trailing_lf_removed_once(m):
    assert parse(m, b"data: a\ndata:\ndata:\n\n") == [msg(b"a\n\n")]


def test_several_events_in_one_chunk_in_order(m):
    stream = b"".join(b"data: %d\n\n" % i for i in range(50))
    assert parse(m, stream) == [msg(b"%d" % i) for i in range(50)]


def test_long_lines_across_many_chunks(m):
    payload = bytes(range(32, 127)) * 400  # 38 KB, no line breaks
    stream = b"data: " + payload + b"\ndata: " + payload + b"\n\n"
    chunks = [stream[i:i + 1000] for i in range(0, len(stream), 1000)]
    assert feed_all(m, chunks)[0] == [msg(payload + b"\n" + payload)]


# --------------------------------------------------------------------- UTF-8

def test_utf8_split_across_reads(m):
    text = "héllo wörld 🎉 日本語 \u2028 \x85"
    stream = ("event: ünï🎉\nid: ïd🎉\ndata: " + text + "\n\n").encode()
    expected = [msg(text.encode(), "ünï🎉", "ïd🎉")]
    assert bytewise(m, stream) == expected
    for k in range(1, 9):
        chunks = [stream[i:i + k] for i in range(0, len(stream), k)]
        assert feed_all(m, chunks)[0] == expected


def test_unicode_line_separators_are_not_line_ends(m):
    # U+2028, U+0085, NEL are data, not line ends; only CR and LF are
    text = "a\u2028b\x85c\x0bd\x0ce"
    assert parse(m, ("data: " + text + "\n\n").encode()) == [msg(text.encode())]


def test_data_bytes_passed_through(m):
    assert parse(m, b"data: \xff\xfe\x00\n\n") == [msg(b"\xff\xfe\x00")]


# --------------------------------------------------------- spec examples

def test_spec_example_stock(m):
    stream = b"data: YHOO\ndata: +2\ndata: 10\n\n"
    assert parse(m, stream) == [msg(b"YHOO\n+2\n10")]


def test_spec_example_ids(m):
    stream = (b": test stream\n\ndata: first event\nid: 1\n\n"
              b"data:second event\nid\n\ndata:  third event\n")
    p = m.SSEParser()
    evs = [tup(e) for e in p.feed(stream)]
    assert evs == [msg(b"first event", id="1"), msg(b"second event", id="")]
    assert p.last_event_id == ""
    assert p.close() == []


def test_spec_example_empty_data(m):
    stream = b"data\n\ndata\ndata\n\ndata:"
    assert parse(m, stream) == [msg(b""), msg(b"\n")]


def test_spec_example_space(m):
    stream = b"data:test\n\ndata: test\n\n"
    assert parse(m, stream) == [msg(b"test"), msg(b"test")]


def test_spec_example_event_types(m):
    stream = (b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n"
              b"event: add\ndata: 113411\n\n")
    assert parse(m, stream) == [msg(b"73857293", "add"), msg(b"2153", "remove"),
                                msg(b"113411", "add")]


def test_openai_stream(m):
    chunk = (b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk",'
             b'"created":1700000000,"model":"gpt-4o","choices":[{"index":0,'
             b'"delta":{"content":"hello"},"finish_reason":null}]}\n\n')
    stream = chunk * 3 + b"data: [DONE]\n\n"
    evs = bytewise(m, stream)
    assert [e[1] for e in evs] == [chunk[6:-2]] * 3 + [b"[DONE]"]


def test_anthropic_stream(m):
    stream = (b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
              b"event: ping\ndata: {\"type\": \"ping\"}\n\n"
              b"event: content_block_delta\ndata: {\"delta\":1}\n\n"
              b"event: content_block_delta\ndata: {\"delta\":2}\n\n")
    assert [e[0] for e in parse(m, stream)] == ["message_start", "ping",
                                                "content_block_delta",
                                                "content_block_delta"]


# ------------------------------------------------------------------ API shape

def test_feed_accepts_bytes_like_and_rejects_str(m):
    p = m.SSEParser()
    assert p.feed(bytearray(b"data: a\n")) == []
    assert [tup(e) for e in p.feed(memoryview(b"xdata: b\n\n")[1:])] == [msg(b"a\nb")]
    with pytest.raises(TypeError):
        p.feed("data: a\n\n")


def test_event_object(m):
    ev = m.SSEParser().feed(b"event: e\nid: 1\nretry: 5\ndata: x\n\n")[0]
    assert type(ev) is m.Event
    assert (ev.event, ev.data, ev.id, ev.retry) == ("e", b"x", "1", 5)
    assert type(ev.event) is str and type(ev.data) is bytes
    assert ev == m.Event("e", b"x", "1", 5)
    assert ev != m.Event("e", b"y", "1", 5)
    assert hash(ev) == hash(m.Event("e", b"x", "1", 5))
    assert "b'x'" in repr(ev)
    d = m.Event()
    assert (d.event, d.data, d.id, d.retry) == ("message", b"", None, None)
    with pytest.raises(AttributeError):
        ev.data = b"y"
    for bad in [dict(event=None), dict(data="x"), dict(id=1), dict(retry="5")]:
        with pytest.raises(TypeError):
            m.Event(**bad)


def test_parser_reusable_after_huge_line(m):
    p = m.SSEParser()
    big = b"x" * 300_000
    assert p.feed(b"data: " + big[:150_000]) == []
    assert [tup(e) for e in p.feed(big[150_000:] + b"\n\n")] == [msg(big)]
    p.feed(b"data: " + big)
    assert p.close() == []
    assert [tup(e) for e in p.feed(b"data: a\n\n")] == [msg(b"a")]


def test_parser_attributes_readonly(m):
    p = m.SSEParser()
    with pytest.raises(AttributeError):
        p.last_event_id = "x"


# -------------------------------------------------------------------- writer

def test_encode_event_exact(m):
    assert m.encode_event(b"x") == b"data: x\n\n"
    assert m.encode_event(b"x", b"e") == b"event: e\ndata: x\n\n"
    assert m.encode_event(b"x", id=b"7") == b"id: 7\ndata: x\n\n"
    assert m.encode_event(b"a\nb\r\nc\rd", b"e", b"7") == (
        b"event: e\nid: 7\ndata: a\ndata: b\ndata: c\ndata: d\n\n")
    assert m.encode_event(b"") == b"data: \n\n"
    assert m.encode_event(b"\n") == b"data: \ndata: \n\n"
    assert m.encode_event(b"a\r") == b"data: a\ndata: \n\n"
    assert m.encode_event(b"\r\r\n\n") == b"data: \ndata: \ndata: \ndata: \n\n"
    assert m.encode_event(b"x", b"", b"") == b"event: \nid: \ndata: x\n\n"


def test_encode_data_exact(m):
    payload = b'{"choices":[{"delta":{"content":"hi"}}]}'
    assert m.encode_data(payload) == b"data: " + payload + b"\n\n"
    assert m.encode_data(b"") == b"data: \n\n"
    assert m.encode_data(b"a\nb") == b"data: a\ndata: b\n\n"
    assert m.encode_data(b"a\r\nb\r") == b"data: a\ndata: b\ndata: \n\n"


def test_encode_rejects_bad_input(m):
    with pytest.raises(TypeError):
        m.encode_data("x")
    with pytest.raises(TypeError):
        m.encode_event("x")
    with pytest.raises(TypeError):
        m.encode_event(b"x", "e")
    with pytest.raises(ValueError):
        m.encode_event(b"x", b"a\nb")
    with pytest.raises(ValueError):
        m.encode_event(b"x", id=b"a\rb")
    with pytest.raises(ValueError):
        m.encode_event(b"x", id=b"a\x00b")


# ------------------------------------------------------------ property tests

PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_value_chars = st.one_of(
    st.sampled_from(list(" :\x00\t\ufeffaé🎉日\u2028")),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
)
_value = st.text(_value_chars, max_size=12)


@st.composite
def _line(draw):
    """One line as (text, intended (field, value) or None for comment/blank)."""
    kind = draw(st.sampled_from(["data", "data", "data", "blank", "blank", "event",
                                 "id", "retry", "comment", "unknown", "bare"]))
    if kind == "blank":
        return "", ("", "")
    if kind == "comment":
        return ":" + draw(_value), None
    if kind == "bare":
        name = draw(st.sampled_from(["data", "event", "id", "retry", "x"]))
        return name, (name, "")
    if kind == "retry":
        value = draw(st.one_of(st.from_regex(r"[0-9]{1,20}", fullmatch=True), _value))
    elif kind == "id":
        value = draw(st.one_of(_value, st.builds("{}\x00{}".format, _value, _value)))
    else:
        value = draw(_value)
    name = kind
    if kind == "unknown":
        name = draw(st.sampled_from(["foo", "Data", "ID", "data "]))
    sep = draw(st.sampled_from([":", ": "]))
    intended = value[1:] if sep == ":" and value.startswith(" ") else value
    return name + sep + value, (name, intended)


def _model(lines):
    """Independent, str-level model of the spec over already-split lines."""
    events, data, etype, idbuf, block_retry, last_id, rtime = [], [], "", None, None, "", None
    for _, parsed in lines:
        if parsed is None:
            continue
        name, value = parsed
        if name == "" and value == "":
            last_id = idbuf if idbuf is not None else ""
            if data:
                events.append((etype or "message", "\n".join(data).encode(), idbuf,
                               block_retry))
            data, etype, block_retry = [], "", None
        elif name == "data":
            data.append(value)
        elif name == "event":
            etype = value
        elif name == "id":
            if "\x00" not in value:
                idbuf = value
        elif name == "retry":
            if value and all(c in "0123456789" for c in value):
                block_retry = rtime = int(value)
    return events, last_id, rtime


def _cuts(draw, stream: bytes):
    """Random split points, biased to fall inside CRLF and UTF-8 sequences."""
    special = [i + 1 for i, b in enumerate(stream) if b == 13]
    special += [i for i, b in enumerate(stream) if 0x80 <= b < 0xC0]
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=12))
    if special:
        cuts += draw(st.lists(st.sampled_from(special), max_size=8))
    cuts = sorted(cuts)
    bounds = [0] + cuts + [len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


def _run(mod, chunks):
    p = mod.SSEParser()
    out = []
    for c in chunks:
        out.extend(tup(e) for e in p.feed(c))
    state = (p.last_event_id, p.reconnection_time)
    assert p.close() == []
    return out, state


_BLANK = ("", ("", ""))
# mostly blank-terminated blocks, then possibly an unterminated tail
_lines = st.tuples(
    st.lists(st.lists(_line(), max_size=5).map(lambda b: b + [_BLANK]), max_size=6),
    st.lists(_line(), max_size=3),
).map(lambda bt: [ln for b in bt[0] for ln in b] + bt[1])


@PROPS
@given(st.data())
def test_property_model_rechunked(data):
    lines = data.draw(_lines)
    eols = [data.draw(st.sampled_from(["\n", "\r", "\r\n"])) for _ in lines]
    for i in range(1, len(lines)):
        # "\r" + (empty line ended by "\n") would be read as one CRLF
        if eols[i - 1] == "\r" and lines[i][0] == "" and eols[i] == "\n":
            eols[i] = "\r\n"
    stream = "".join(t + e for (t, _), e in zip(lines, eols)).encode()
    if data.draw(st.booleans()):
        stream = BOM + stream
    events, last_id, rtime = _model(lines)
    chunks = _cuts(data.draw, stream)
    for mod in IMPLS:
        assert _run(mod, [stream]) == (events, (last_id, rtime)), mod.__name__
        assert _run(mod, chunks) == (events, (last_id, rtime)), mod.__name__


_TOKENS = [b"data", b"event", b"id", b"retry", b"foo", b":", b": ", b" ", b"\r", b"\n",
           b"\r\n", b"\n\n", b"x", b"12", b"\x00", BOM, b"\xef", b"\xbb", b"\xc3\xa9",
           b"\xf0\x9f\x8e\x89", b"\xff", b"message"]


@PROPS
@given(st.data())
def test_property_fuzz_compiled_equals_reference(data):
    parts = data.draw(st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=4)),
                               max_size=60))
    stream = b"".join(parts)
    chunks = _cuts(data.draw, stream)
    whole = _run(reference, [stream])
    assert _run(reference, chunks) == whole
    assert _run(compiled, [stream]) == whole
    assert _run(compiled, chunks) == whole


def _normalize(data: bytes) -> bytes:
    return re.sub(rb"\r\n|\r", b"\n", data)


_payload = st.lists(st.one_of(st.sampled_from([b"\r", b"\n", b"\r\n", b"{\"a\":1}", b" ",
                                               b":", "é🎉".encode()]),
                              st.binary(max_size=8)), max_size=10).map(b"".join)
_name = st.text(_value_chars.filter(lambda c: c != "\x00"), max_size=8).map(str.encode)


@PROPS
@given(st.lists(st.tuples(_payload, st.none() | _name, st.none() | _name),
                min_size=1, max_size=6), st.data())
def test_property_encode_round_trip(items, data):
    expected, last_id = [], None
    for payload, event, id_ in items:
        if id_ is not None:
            last_id = id_.decode()
        expected.append(((event or b"").decode() or "message", _normalize(payload),
                         last_id, None))
    for mod in IMPLS:
        stream = b"".join(mod.encode_event(p, e, i) for p, e, i in items)
        assert stream == b"".join(reference.encode_event(p, e, i) for p, e, i in items)
        assert _run(mod, [stream])[0] == expected
        assert _run(mod, _cuts(data.draw, stream))[0] == expected
        enc = [mod.encode_data(p) for p, _, _ in items]
        assert enc == [mod.encode_event(p) for p, _, _ in items]
        assert _run(mod, [b"".join(enc)])[0] == [
            ("message", _normalize(p), None, None) for p, _, _ in items]


# ------------------------------------------------------------ plain_prefix

RELAY_MARKERS = (b"[DONE]", b'"usage":{', b'"error"')
PIECES = [b'data: {"c":"hi"}\n\n', b'data: {"c":"two\\nlines"}\r\n\r\n', b"data: [DONE]\n\n", b": keep-alive\n\n",
          b'data: {"usage":{"t":1}}\n\n', b'data: {"error":{}}\n\n', b"data: {not json\n\n", b"\n\n", b"\n",
          b'event: x\ndata: {"a":1}\ndata: {"b":2}\n\n', b'data: {"c":"data: inside"}\n\n', b"}", b"data:"]


@pytest.mark.parametrize("events,end,lines", [
    (b'data: {"c":"hi"}\n\n' * 3 + b"data: [DONE]\n\n", 54, 3),
    (b"data: [DONE]\n\n", 0, 0),
    (b'data: {"c":"hi"}\n\n: keep-alive\n\ndata: {"c":"hi"}\n\n', 18, 1),
    (b'event: x\ndata: {"a":1}\ndata: {"b":2}\n\n', 38, 2),
    (b'data: {"c":"hi"}\r\n\r\n', 0, 0),          # no LF LF: read by the parser
    (b"", 0, 0),
    (b'data: {"c":"data: inside"}\n\n', 28, 1),       # a data line, not every "data:" in it
])
def test_plain_prefix_stops_at_the_first_event_to_read(m, events, end, lines):
    assert m.plain_prefix(events, RELAY_MARKERS) == (end, lines)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=12), max_size=20))
def test_plain_prefix_compiled_equals_reference(pieces):
    events = b"".join(pieces)
    got = compiled.plain_prefix(events, RELAY_MARKERS)
    assert got == reference.plain_prefix(events, RELAY_MARKERS)
    end = got[0]
    assert end == 0 or events[end - 3:end] == b"}\n\n"
    assert not any(marker in events[:end] for marker in RELAY_MARKERS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=12), max_size=20), st.data())
def test_plain_prefix_from_an_offset_reads_as_from_the_slice_there(pieces, data):
    # a relay goes on past an event it read without copying the rest: the same answer as on the
    # slice, its end counted from the read's start
    events = b"".join(pieces)
    offset = data.draw(st.integers(0, len(events)))
    end, lines = reference.plain_prefix(events[offset:], RELAY_MARKERS)
    for m in (compiled, reference):
        assert m.plain_prefix(events, RELAY_MARKERS, offset) == (offset + end, lines)


@pytest.mark.parametrize("offset", [-1, 6])
def test_plain_prefix_refuses_an_offset_outside_the_read(m, offset):
    with pytest.raises(ValueError):
        m.plain_prefix(b"data:", RELAY_MARKERS, offset)


_TOKEN_EVENT = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"tok"}}]}\n\n'


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 40), st.integers(0, 70), st.sampled_from(RELAY_MARKERS + (b"ab", b"q")),
       st.binary(max_size=40))
def test_plain_prefix_finds_a_marker_at_any_offset_of_a_long_read(events_before, cut, marker, tail):
    # the marker search steps 16 bytes at a time: a marker across a step's edge, in the last
    # bytes of the read, half of it at the very end, or one byte long is found (or not) as the reference finds it
    events = _TOKEN_EVENT * events_before
    for read in (events[:len(events) - cut] + marker + tail, events + marker[:len(marker) // 2],
                 events + b'data: {"x":"' + marker + b'"}\n\n' + events):
        for markers in (RELAY_MARKERS, (marker,), (marker, b'"usage":{')):
            assert compiled.plain_prefix(read, markers) == reference.plain_prefix(read, markers)


@pytest.mark.parametrize("marker", RELAY_MARKERS)
def test_plain_prefix_passes_what_differs_from_a_marker_in_one_byte(marker):
    # the search compares a marker's two ends first, then the bytes between: a near miss in any of
    # them, at any offset of a 16-byte step, is a plain event
    for at in range(len(marker)):
        near = marker[:at] + b"#" + marker[at + 1:]
        for offset in range(17):
            read = _TOKEN_EVENT + b'data: {"x":"' + b"y" * offset + near + b'"}\n\n' + _TOKEN_EVENT
            assert compiled.plain_prefix(read, RELAY_MARKERS) == (len(read), 3), (near, offset)
            hit = read.replace(near, marker)
            assert compiled.plain_prefix(hit, RELAY_MARKERS) == (len(_TOKEN_EVENT), 1), (marker, offset)


@pytest.mark.parametrize("markers", [(b"[DONE]", b'"error"'), (b'"error"', b"[DONE]")], ids=["later-first", "in-order"])
def test_plain_prefix_stops_at_the_earliest_of_two_markers_in_one_step(m, markers):
    # the markers are looked for together, 16 positions a step: when two are found in one step,
    # the earlier in the read decides, whichever comes first in the markers
    for pad in range(17):
        first = b'data: {"a":"' + b"1" * pad + b'"}\n\n'
        read = first + b'data:"error"}\n\ndata:[DONE]}\n\n' + _TOKEN_EVENT
        assert m.plain_prefix(read, markers) == (len(first), 1), pad
        assert m.plain_prefix(read.replace(b'"error"', b'"err0r"'), markers) == (len(first) + 15, 2), pad


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b'"', b"{", b"}", b"[", b"]", b":", b" ", b"a", b"e", b"r", b"o", b"u", b"s", b"g",
                                 b"DONE", b'"usage"', b'"error"', b"[DONE]", b'"usage":{']), max_size=120),
       st.lists(st.binary(min_size=1, max_size=12).filter(lambda m: b"\n" not in m), min_size=1, max_size=8))
def test_the_first_marker_is_found_the_same_in_steps_of_32_16_and_by_find(pieces, extra):
    """The search compares each marker's first byte and one more at every position of a step, 32
    (AVX2) or 16 (SSE2) at a time, then the rest: whichever, the first marker of the read is where
    bytes.find says, with the relay's markers or any others (a marker longer than the read, one
    byte long, the same marker twice)."""
    events = b"".join(pieces)
    for markers in (RELAY_MARKERS, tuple(extra), (b"[DONE]", b'"usage":{', b'"usage": {', b'"error"') + tuple(extra[:4])):
        expected = reference.first_marker(events, markers)
        assert compiled.first_marker(events, markers) == expected
        assert compiled.first_marker(events, markers, wide=False) == expected


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), st.data())
def test_a_marker_taken_from_the_read_is_found_where_find_says_zero_bytes_and_long_ones_too(events, data):
    """The last positions of a read are screened in a copy padded with zero bytes: a marker with a zero
    byte (looked for alone there) or longer than the padding allows (65 bytes and up) is found where
    bytes.find says, as is one that ends exactly at the read's end."""
    markers = []
    for _ in range(data.draw(st.integers(1, 4))):
        if events:
            start = data.draw(st.integers(0, len(events) - 1))
            markers.append(events[start:start + data.draw(st.integers(1, 80))])
        else:
            markers.append(b"\x00")
    markers = tuple(markers)
    expected = reference.first_marker(events, markers)
    assert compiled.first_marker(events, markers) == expected
    assert compiled.first_marker(events, markers, wide=False) == expected
    # a marker that the read's end and the zero padding would complete is not there
    if events:
        beyond = (events[-data.draw(st.integers(1, min(len(events), 12))):] + b"\x00",)
        assert compiled.first_marker(events, beyond) == reference.first_marker(events, beyond)
        assert compiled.first_marker(events, beyond, wide=False) == reference.first_marker(events, beyond)


def test_this_cpu_searches_in_steps_of_32_when_it_can():
    """Where the CPU has AVX2 the wide search runs (so the test above ran both)."""
    assert compiled.WIDE_MARKER_SEARCH == ("avx2" in open("/proc/cpuinfo").read().split())


def test_plain_prefix_refuses_markers_it_cannot_look_for(m):
    for markers in [(b"",), ("[DONE]",)]:
        with pytest.raises(TypeError):
            m.plain_prefix(b"data: {}\n\n", markers)
    for markers in [(b"a\nb",), (b"x",) * 9]:     # a line feed could straddle the blank line; a fixed table
        with pytest.raises(ValueError):
            m.plain_prefix(b"data: {}\n\n", markers)


# ------------------------------------------------------------ whole_events

@pytest.mark.parametrize("carry,chunk,events,rest", [
    (b"", b'data: {"a":1}\n\n', b'data: {"a":1}\n\n', b""),
    (b"data: {", b'"a":1}\n\ndata: {"b"', b'data: {"a":1}\n\n', b'data: {"b"'),
    (b"", b"data: x\r\n\r\ndata: y\r\r: z", b"data: x\r\n\r\ndata: y\r\r", b": z"),
    (b"", b"data: partial", b"", b"data: partial"),
    (b"", b"", b"", b""),
    (b"data: x\n", b"\n", b"data: x\n\n", b""),        # the blank line split over two reads
    (b"", b"data: x\n\r\ndata: y\r\n", b"", b"data: x\n\r\ndata: y\r\n"),   # LF CR LF: none of the three
])
def test_whole_events_cuts_after_the_last_blank_line(m, carry, chunk, events, rest):
    assert m.whole_events(carry, chunk) == (events, rest)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=8), st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"data: x", b"}"]) | st.binary(max_size=6),
                                       max_size=16))
def test_whole_events_compiled_equals_reference(carry, pieces):
    chunk = b"".join(pieces)
    got = compiled.whole_events(carry, chunk)
    assert got == reference.whole_events(carry, chunk)
    assert got[0] + got[1] == carry + chunk


def test_the_relay_calls_refuse_none(m):
    # ``whole_events`` and ``plain_prefix`` are ``cpdef`` (the compiled relay calls them in C): a None
    # is a TypeError, not a read through a null object
    with pytest.raises(TypeError):
        m.whole_events(None, b"data: x\n\n")
    with pytest.raises(TypeError):
        m.whole_events(b"", None)
    with pytest.raises(TypeError):
        m.plain_prefix(None, (b"[DONE]",))
    with pytest.raises(TypeError):
        m.plain_prefix(b'data: {"a":1}\n\n', None)
    assert m.plain_prefix(b'data: {"a":1}\n\n', (b"[DONE]",)) == (15, 1)
