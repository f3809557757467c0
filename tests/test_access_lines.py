"""The access log's flush writes lines without records: each is exactly the line the record way wrote.

The reference is the formatting as it was before the flush skipped records (kept here: a JSON
object of the envelope then ``AccessLine.fields()``, or ``key=value`` pairs from a per-character
check), fed the same values; the lines come from a real ``AccessLog.flush`` into a ``LineHandler``
writing to a pipe.
"""
from __future__ import annotations

import logging
import os

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastinfer.observe import access, logs
from fastinfer.redact import remember

SECRET = "sk-proj-never-in-an-access-line-7"
PID = os.getpid()


def reference_value(value) -> str:
    """A value as logfmt showed it before: strings checked by a generator over their characters."""
    if isinstance(value, str):
        return value if value and all(c.isalnum() or c in "-_./:@+" for c in value) else orjson.dumps(value).decode()
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def reference_line(fmt: str, ts: float, values: tuple, known: bool) -> str:
    fields = access.AccessLine(values, known).fields()
    if fmt == "json":
        out = {"ts": logs.iso_time(ts), "level": "info", "logger": logs.ACCESS_LOGGER, "pid": PID}
        out.update(fields)
        return orjson.dumps(out).decode()
    pairs = " ".join(f"{name}={reference_value(value)}" for name, value in fields.items())
    return f"{logs.iso_time(ts)} INFO {logs.ACCESS_LOGGER}[{PID}]: {pairs}"


class _Loop:
    """``call_later`` that never fires: the tests flush by themselves."""

    def call_later(self, delay, callback):
        class Timer:
            def cancel(self):
                pass
        return Timer()


class Piped:
    """The access logger writing through one ``LineHandler`` to a pipe, as ``setup_logging`` leaves it."""

    def __init__(self, fmt: str):
        self.read_end, write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.handler = logs.LineHandler(write_end)
        self.handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
        self.logger = logging.getLogger(logs.ACCESS_LOGGER)
        self.saved = self.logger.handlers[:], self.logger.propagate, self.logger.level, self.logger.filters[:]
        self.own()
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)

    def own(self) -> None:
        """Make the pipe's handler the logger's only one again.

        pytest (9.2 on) attaches its capture handler to every non-propagating logger when a test's
        call phase starts, after fixtures ran: a test body calls this first, as ``setup_logging``
        leaves the logger in a served process.
        """
        self.logger.handlers[:] = [self.handler]

    def lines(self) -> list[str]:
        data = b""
        try:
            while chunk := os.read(self.read_end, 1 << 20):
                data += chunk
        except BlockingIOError:
            pass
        return data.decode("utf-8", "backslashreplace").splitlines()

    def close(self):
        self.logger.handlers[:], self.logger.propagate, level, self.logger.filters[:] = self.saved
        self.logger.setLevel(level)     # not ``.level =``: the logger's cached isEnabledFor must go too
        os.close(self.handler.fd)
        os.close(self.read_end)


@pytest.fixture(params=["json", "text"])
def piped(request):
    p = Piped(request.param)
    p.fmt = request.param
    yield p
    p.close()


def add_all(log: access.AccessLog, rows):
    for ts, values in rows:
        log.add(ts, values)


TEXT = st.text(max_size=40) | st.sampled_from(["0f3a9c1b2d4e5f60", "team a", "POST", "/v1/chat/completions", "",
                                               f"id {SECRET}", "Bearer abcdef.gh", "naïve-ütf", "x\ny\"z",
                                               "lone-\udcff", "\u2028\x85", "x" * 300])
MAYBE_NUMBER = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.integers(0, 10**9)
VALUES = st.tuples(
    TEXT, st.none() | TEXT, st.none() | TEXT | st.just("gpt-4o"), st.none() | TEXT, st.none() | TEXT,
    st.integers(100, 599),
    st.integers(0, 9), st.booleans(), st.none() | st.floats(0, 600, allow_nan=False),
    st.none() | st.floats(0, 600, allow_nan=False), st.none() | st.floats(0, 1, allow_nan=False),
    st.none() | st.integers(0, 10**7), st.none() | st.integers(0, 10**7), MAYBE_NUMBER,
    st.none() | TEXT, st.sampled_from(["POST", "GET", "weird method"]), TEXT)
TS = st.floats(min_value=1.6e9, max_value=2e9, allow_nan=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # drained
@given(rows=st.lists(st.tuples(TS, VALUES), min_size=1, max_size=8))
def test_each_line_is_the_line_records_made(piped, rows):
    piped.own()
    remember(SECRET)
    # a lone surrogate makes orjson raise either way: ``test_a_line_orjson_refuses...`` covers it
    rows = [(ts, values) for ts, values in rows if not any(isinstance(v, str) and _has_surrogate(v) for v in values)]
    log = access.AccessLog(_Loop(), ["gpt-4o"])
    add_all(log, rows)
    assert logs.direct_handler(piped.logger) is piped.handler       # the way without records is taken
    log.flush()
    got = piped.lines()
    want = [line for ts, values in rows for line in reference_line(piped.fmt, ts, values, values[2] == "gpt-4o")
            .encode("utf-8", "backslashreplace").decode().splitlines()]
    assert got == want


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


ROW = (1_700_000_000.25, ("req-1", "team-a", "gpt-4o", None, "r0", 200, 1, True, 0.5, 0.1, 0.0002, 10, 20, 0.001, None,
                          "POST", "/v1/chat/completions"))


def test_another_handler_or_a_filter_still_gets_records(piped):
    piped.own()
    seen: list[logging.LogRecord] = []

    class Recorder(logging.Handler):
        def emit(self, record):
            seen.append(record)

    recorder = Recorder()
    piped.logger.addHandler(recorder)
    assert logs.direct_handler(piped.logger) is None
    log = access.AccessLog(_Loop(), ["gpt-4o"])
    add_all(log, [ROW])
    log.flush()
    assert piped.lines() == [reference_line(piped.fmt, *ROW, True)]
    assert len(seen) == 1 and seen[0].name == logs.ACCESS_LOGGER and isinstance(seen[0].msg, access.AccessLine)
    piped.logger.removeHandler(recorder)
    piped.logger.addFilter(lambda record: False)      # a filter dropping every record: nothing written
    add_all(log, [ROW])
    log.flush()
    assert piped.lines() == []


def test_a_disabled_access_logger_writes_nothing(piped):
    piped.own()
    piped.logger.setLevel(logging.WARNING)
    assert logs.direct_handler(piped.logger) is None
    log = access.AccessLog(_Loop(), ["gpt-4o"])
    add_all(log, [ROW])
    log.flush()
    assert piped.lines() == []


def test_a_line_orjson_refuses_is_reported_and_the_others_keep_their_order(monkeypatch):
    p = Piped("json")
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(p.handler, "handleError", reported.append)
    try:
        bad = (ROW[0], ("bad-\udcff-id",) + ROW[1][1:])
        log = access.AccessLog(_Loop(), ["gpt-4o"])
        add_all(log, [ROW, bad, (ROW[0] + 1, ROW[1])])
        log.flush()
        assert p.lines() == [reference_line("json", *ROW, True), reference_line("json", ROW[0] + 1, ROW[1], True)]
        assert len(reported) == 1 and reported[0].msg.values[0] == "bad-\udcff-id"
    finally:
        p.close()


@pytest.mark.parametrize("names, values", [((), ()), (("note", "ts"), ("x", 1.5)), (("duration_ms", "n"), (0.0123, 3))])
def test_a_values_line_is_the_fields_line_with_no_field_or_a_field_named_as_the_envelope(names, values):
    formatter = logs.JsonFormatter()
    millis = 1 if names[:1] == ("duration_ms",) else 0
    line = formatter.encoded_values_line(1.7e9, logging.INFO, "t", PID, names, values, millis)
    assert line == formatter.encoded_line(1.7e9, logging.INFO, "t", PID, logs.fields_of(names, values, millis))
    assert orjson.loads(line)["pid"] == PID
