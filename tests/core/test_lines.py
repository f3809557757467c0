"""``_core.lines.json_line``: a JSON object line written in one pass, byte for byte what orjson writes
(its reference, ``_core.ref.lines``, is orjson itself), on chosen and generated values."""
import math

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from fastinfer._core import lines as compiled
from fastinfer._core.ref import lines as reference
from fastinfer.observe.logs import iso_time

HEAD = b'{"ts":"2026-12-02T01:02:03.004Z","pid":7,'
TEXT_HEAD = b"2026-12-02T01:02:03.004Z INFO fastinfer.access[7]: "


def keys(n):
    return tuple(orjson.dumps(f"k{i}") + b":" for i in range(n))


def text_keys(n):
    return tuple(f"k{i}=".encode() for i in range(n))


def both(values, millis=0, text=False):
    """The line from both (with ``text``, the text format's), or the exception type each raised."""
    out = []
    for impl in (compiled, reference):
        try:
            if text:
                out.append(impl.logfmt_line(TEXT_HEAD, text_keys(len(values)), tuple(values), millis))
            else:
                out.append(impl.json_line(HEAD, keys(len(values)), tuple(values), millis))
        except Exception as e:
            out.append(type(e))
    return out


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**63 - 1, -2**63, 2**64 - 1, 12.345, 0.001, 1e-5, 1.5e-5, 9.99e-6, 1.5e-6, 1e-7,
    1e15, 1e16, 1.2345678901234568e17, 5e-324, -0.0, 0.0, 100.0, math.nan, math.inf, -math.inf,
    "", "plain", 'quote " and \\ backslash', "\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f", "é ü 中 \u2028 😀"])
def test_each_value_is_written_as_orjson_writes_it(value):
    line = compiled.json_line(HEAD, keys(1), (value,))
    assert line == HEAD + b'"k0":' + orjson.dumps(value) + b"}\n"
    assert orjson.loads(line) == {"ts": "2026-12-02T01:02:03.004Z", "pid": 7, "k0": orjson.loads(orjson.dumps(value))}
    assert line == reference.json_line(HEAD, keys(1), (value,))


@pytest.mark.parametrize("value", [2**64, -2**63 - 1, "lone \ud800 surrogate", b"bytes", [1], 1 + 2j, {"a": 1}])
def test_what_orjson_would_refuse_or_render_its_own_way_raises(value):
    with pytest.raises(Exception):
        compiled.json_line(HEAD, keys(1), (value,))
    with pytest.raises(Exception):
        reference.json_line(HEAD, keys(1), (value,))


def test_seconds_are_written_as_milliseconds_to_three_decimals():
    values = (0.0123456, 2, None, 0.0123456, 1e-9, 0.0004995, 0.0004994)
    line = compiled.json_line(HEAD, keys(7), values, millis=0b1110111)
    assert orjson.loads(line) | {} == {"ts": "2026-12-02T01:02:03.004Z", "pid": 7, "k0": 12.346, "k1": 2000.0,
                                        "k2": None, "k3": 0.0123456, "k4": 0.0, "k5": 0.5, "k6": 0.499}
    assert line == reference.json_line(HEAD, keys(7), values, millis=0b1110111)
    for bad in (math.nan, math.inf, True, "1"):
        assert both((bad,), millis=1)[0] in (ValueError, OverflowError, TypeError)
        assert both((bad,), millis=1)[0] is both((bad,), millis=1)[1]


@settings(max_examples=400, deadline=None)
@given(st.integers(-10**16, 10**16), st.sampled_from([1.0, 1e-6, 1e-3]))
def test_milliseconds_from_digits_are_the_shortest_round_trip(micro, unit):
    """Below 10**15 µs a duration's milliseconds are written from the integer's digits, not formatted
    as a float: the same text as orjson's of ``int(s * 1e6 + 0.5) / 1000`` on both sides of the switch."""
    seconds = micro * unit / 1e6
    line = compiled.json_line(HEAD, keys(1), (seconds,), millis=1)
    assert line == HEAD + b'"k0":' + orjson.dumps(int(seconds * 1e6 + 0.5) / 1000) + b"}\n"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(0, 253402300799.999), st.integers(0, 253402300799).map(float),
                 st.sampled_from([0.0, 0.9995, 951782400.0, 1764648726.9999999, 4102444800.001])))
def test_a_stamped_line_is_the_reference_line_and_the_logs_timestamp(created):
    """The line's head: ``created`` as the logs write every timestamp, the part up to the second
    formatted once a second (two lines a second apart, or in the same second, both right)."""
    envelope = b'","level":"info","logger":"fastinfer.access","pid":7,'
    for t in (created, created + 1.0, created):
        if t >= 253402300800.0:
            continue
        line = compiled.stamped_line(t, envelope, keys(2), ("a", 0.0015), millis=0b10)
        assert line == reference.stamped_line(t, envelope, keys(2), ("a", 0.0015), millis=0b10)
        assert line.startswith(b'{"ts":"' + iso_time.encoded(t) + envelope)


@pytest.mark.parametrize("created", [-0.5, -1e9, 253402300800.0, math.inf, math.nan])
def test_a_time_a_stamp_cannot_show_raises_in_both(created):
    for impl in (compiled, reference):
        with pytest.raises(ValueError):
            impl.stamped_line(created, b",", keys(1), (1,))


def test_keys_and_values_must_pair():
    with pytest.raises(ValueError):
        compiled.json_line(HEAD, keys(2), (1,))
    with pytest.raises(TypeError):
        compiled.json_line(HEAD, ("k0",), (1,))     # keys are encoded bytes


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**65), st.floats(allow_nan=True),
                    st.floats(min_value=-1e6, max_value=1e6), st.text(), st.text(alphabet=st.characters(max_codepoint=0x7f)))


@settings(max_examples=500, deadline=None)
@given(st.lists(_VALUES, max_size=12), st.integers(0, 2**12 - 1))
def test_compiled_lines_are_the_reference_lines(values, millis):
    compiled_line, reference_line = both(values, millis)
    assert compiled_line == reference_line


# ---------------------------------------------------------------- a batch of lines, and pipe pieces

_KNOWN = frozenset({"d"})
_SHOWN = {"/v1/chat/completions": "/v1/chat/completions", "/v1/x?key=sk-1": "/v1/x?key=[REDACTED]"}
_KEPT_AS_IS = (_KNOWN, _SHOWN, 0, 1, 2)      # deployment, error, path
_ROW = st.tuples(st.floats(0, 4e9), st.tuples(st.sampled_from(["d", "unknown"]), st.sampled_from([None, "boom"]),
                                                st.sampled_from(["/v1/chat/completions", "/v1/x?key=sk-1", "/new"]),
                                                _VALUES))


def _batch(impl, pending, start):
    out = []
    try:
        stop = impl.stamped_lines(pending, start, b'","pid":1,', keys(4), 0, _KEPT_AS_IS, out)
    except Exception as e:
        return type(e)
    return stop, out


@settings(max_examples=300, deadline=None)
@given(st.lists(_ROW, max_size=8), st.integers(0, 8))
def test_a_batch_of_lines_stops_where_the_reference_stops_with_the_same_lines(pending, start):
    start = min(start, len(pending))
    compiled_batch = _batch(compiled, pending, start)
    assert compiled_batch == _batch(reference, pending, start)
    stop, out = compiled_batch
    # every line before the stop is written as kept; the one at the stop is the caller's
    assert len(out) == stop - start
    for (created, values), line in zip(pending[start:stop], out):
        assert line == compiled.stamped_line(created, b'","pid":1,', keys(4), values)
        assert values[0] in _KNOWN and values[1] is None and _SHOWN[values[2]] == values[2]
    if stop < len(pending):
        created, values = pending[stop]
        safe = values[0] in _KNOWN and values[1] is None and _SHOWN.get(values[2]) == values[2]
        if safe:      # stopped for a value the line cannot hold
            with pytest.raises(Exception):
                reference.stamped_line(created, b'","pid":1,', keys(4), values)


def test_a_batch_stops_at_each_line_the_caller_must_make_safe():
    line = (1.7e9, ("d", None, "/v1/chat/completions", 1))
    pending = [line, (1.7e9, ("unknown", None, "/v1/chat/completions", 1)), line,
               (1.7e9, ("d", "an error", "/v1/chat/completions", 1)), line, (1.7e9, ("d", None, "/new", 1)),
               line, (1.7e9, ("d", None, "/v1/x?key=sk-1", 1)), line, (1.7e9, ("d", None, "/v1/chat/completions", {}))]
    for impl in (compiled, reference):
        stops, start, out = [], 0, []
        while start < len(pending):
            start = impl.stamped_lines(pending, start, b'","pid":1,', keys(4), 0, _KEPT_AS_IS, out)
            stops.append(start)
            start += 1
        assert stops == [1, 3, 5, 7, 9] and len(out) == 5


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=60).map(lambda b: b + b"\n"), max_size=40), st.integers(1, 200))
def test_pipe_pieces_keep_every_byte_in_order_within_the_limit(lines, limit):
    pieces = compiled.pipe_pieces(lines, limit)
    assert pieces == reference.pipe_pieces(lines, limit)
    assert b"".join(pieces) == b"".join(lines)
    # a piece over the limit is one line alone; no two neighbours would have fitted together
    for piece in pieces:
        assert len(piece) <= limit or piece in lines
    assert all(len(a) + len(b) > limit for a, b in zip(pieces, pieces[1:]))


# ---------------------------------------------------------------- the text format's line (logfmt)

@pytest.mark.parametrize("value, shown", [
    (None, "-"), (True, "true"), (False, "false"), (0, "0"), (-2**63, str(-2**63)), (2**64 - 1, str(2**64 - 1)),
    (12.345, "12.345"), (1e-5, "1e-05"), (1e16, "1e+16"), (-0.0, "-0.0"), (100.0, "100.0"), (math.nan, "nan"),
    (-math.inf, "-inf"), ("", '""'), ("plain", "plain"), ("a_b-c./:@+9", "a_b-c./:@+9"), ("two words", '"two words"'),
    ('quote " \\', '"quote \\" \\\\"'), ("tab\there", '"tab\\there"'), ("key=value", '"key=value"')])
def test_each_value_is_written_as_logfmt_writes_it(value, shown):
    from fastinfer.observe.logs import logfmt
    line = compiled.logfmt_line(TEXT_HEAD, text_keys(2), (value, 1))
    assert line == TEXT_HEAD + f"k0={shown} k1=1\n".encode()
    assert line == TEXT_HEAD + (logfmt({"k0": value, "k1": 1}) + "\n").encode()
    assert line == reference.logfmt_line(TEXT_HEAD, text_keys(2), (value, 1))


@pytest.mark.parametrize("value", ["é", "中文", "a\u2028b", 2**64, -2**63 - 1, b"bytes", [1], {"a": 1}])
def test_what_the_text_line_leaves_to_the_caller_raises_in_both(value):
    """A non-ASCII string (whose bareness is Unicode's), a wide integer, another type: the caller's."""
    compiled_line, reference_line = both((value,), text=True)
    assert isinstance(compiled_line, type) and issubclass(compiled_line, Exception)
    assert compiled_line is reference_line


@settings(max_examples=500, deadline=None)
@given(st.lists(_VALUES, max_size=12), st.integers(0, 2**12 - 1))
def test_compiled_text_lines_are_the_reference_lines(values, millis):
    compiled_line, reference_line = both(values, millis, text=True)
    assert compiled_line == reference_line


_ASCII_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                          st.text(alphabet=st.characters(max_codepoint=0x7f)),
                          st.text(alphabet="abcXYZ019_-./:@+ =\"\\"))


@settings(max_examples=500, deadline=None)
@given(st.floats(0, 4e9), st.lists(_ASCII_VALUES, max_size=10), st.integers(0, 2**10 - 1))
def test_a_stamped_text_line_is_the_text_formatters_line(created, generated, millis):
    """The compiled text line is the line ``observe.logs.TextFormatter`` makes in Python, byte for byte."""
    from fastinfer.observe.logs import TextFormatter
    values = ("d", None, "/p", *generated)      # a known deployment, no error, a path shown as it is
    names = tuple(f"field_{i}" for i in range(len(values)))
    millis = (millis << 3) & sum(1 << i for i, v in enumerate(values) if v is None or type(v) in (int, float))
    formatter = TextFormatter()
    out = []
    stop = formatter.stamped_lines([(created, values)], 0, 20, "fastinfer.access", 7, names, millis,
                                   (frozenset({"d"}), {"/p": "/p"}, 0, 1, 2), out)
    try:
        expected = formatter.encoded_values_line(created, 20, "fastinfer.access", 7, names, values, millis)
    except (ValueError, OverflowError):     # NaN or an infinity as seconds: the records' way, which reports it
        assert stop == 0 and out == []
        return
    assert stop == 1 and out == [expected]


def test_a_flush_writes_the_text_lines_the_compiled_loop_cannot_in_python(tmp_path):
    """A line with a non-ASCII value stops the compiled loop; the flush writes it as the formatter does,
    between the others, in order."""
    import logging
    import os
    from fastinfer.observe import access
    from fastinfer.observe.logs import LineHandler, TextFormatter
    path = tmp_path / "access.log"
    handler = LineHandler(os.open(path, os.O_WRONLY | os.O_CREAT))
    handler.setFormatter(TextFormatter())
    log = access.AccessLog.__new__(access.AccessLog)
    log._known, log._pid = frozenset({"d"}), 7
    line = ("id-1", "team", "d", None, "r0", 200, 1, False, 0.5, None, 0.001, 3, 4, 0.25, None, "POST", "/v1/chat/completions")
    unicode_key = ("id-2", "équipe", *line[2:])
    pending = [(1.7e9, line), (1.7e9 + 0.5, unicode_key), (1.7e9 + 1, line)]
    log._write_lines(handler, pending)
    os.close(handler.fd)
    written = path.read_bytes().splitlines(keepends=True)
    formatter = TextFormatter()
    assert written == [formatter.encoded_values_line(t, logging.INFO, "fastinfer.access", 7, access.FIELDS, v,
                                                     access.MILLIS) for t, v in pending]
    assert "key=équipe".encode() in written[1]
