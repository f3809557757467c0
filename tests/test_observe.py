"""``fastinfer.observe`` in process: the formatters, the line handler's writes, the rate limiter.

The end-to-end behaviour (a real gateway's access log, traces to a collector) is in
``test_access_log.py`` and ``test_tracing.py``.
"""
from __future__ import annotations

import json
import logging
import os
import sys

import pytest

from fastinfer.observe import access, logs, ratelimit
from fastinfer.redact import remember

SECRET = "sk-proj-never-in-a-log-line-42"


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def record(msg, *args, level=logging.ERROR, name="fastinfer.engine", exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def raised() -> tuple:
    try:
        raise ValueError(f"the upstream said {SECRET}")
    except ValueError:
        return sys.exc_info()


def test_a_json_line_has_the_fields_and_nothing_secret():
    remember(SECRET)
    line = logs.JsonFormatter().format(record("cannot read %s", f"Bearer {SECRET}", exc_info=raised()))
    entry = json.loads(line)
    assert list(entry) == ["ts", "level", "logger", "pid", "msg", "exc"]
    assert entry["level"] == "error" and entry["logger"] == "fastinfer.engine" and entry["pid"] == os.getpid()
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2024-05-01T12:00:00.123Z")
    assert entry["exc"].startswith("Traceback") and "ValueError: the upstream said ****" in entry["exc"]
    assert SECRET not in line and "\n" not in line


def test_a_text_line_is_one_line_then_its_traceback():
    remember(SECRET)
    text = logs.TextFormatter().format(record("key %s", SECRET, level=logging.WARNING, exc_info=raised()))
    first, *rest = text.splitlines()
    assert first.endswith(f" WARNING fastinfer.engine[{os.getpid()}]: key ****")
    assert rest[0] == "Traceback (most recent call last):" and SECRET not in text


def test_an_access_line_in_both_formats():
    values = ("id-1", "team a", "gpt-4o", "llama", "r0", 502, 3, False, 0.0123456, None, 0.0004, None, None, None,
              'upstream said "no"', "POST", "/v1/chat/completions")
    line = access.AccessLine(values, known_deployment=True)
    r = record(line, level=logging.INFO, name="fastinfer.access")
    entry = json.loads(logs.JsonFormatter().format(r))
    assert entry["duration_ms"] == 12.346 and entry["ttft_ms"] is None and entry["overhead_ms"] == 0.4
    assert entry["status"] == 502 and entry["key"] == "team a" and entry["error"] == 'upstream said "no"'
    text = logs.TextFormatter().format(r)
    assert text.endswith(': request_id=id-1 key="team a" deployment=gpt-4o fallback=llama replica=r0 status=502 attempts=3 '
                         'stream=false duration_ms=12.346 ttft_ms=- overhead_ms=0.4 prompt_tokens=- '
                         'completion_tokens=- cost_usd=- error="upstream said \\"no\\"" method=POST '
                         'path=/v1/chat/completions')


def test_an_unknown_model_name_is_capped_and_redacted_in_the_access_line():
    remember(SECRET)
    values = ("id-2", None, SECRET + "x" * 1000, None, None, 404, 0, False, None, None, None, None, None, None, None,
              "POST", "/v1/chat/completions")
    shown = access.AccessLine(values, known_deployment=False).fields()["deployment"]
    assert SECRET not in shown and len(shown) < 300 and shown.endswith("...")


def test_lines_are_written_whole_and_at_most_pipe_buf_bytes_at_a_time(monkeypatch):
    read_end, write_end = os.pipe()
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(logs.os, "write", recording_write)
    handler = logs.LineHandler(write_end)
    handler.setFormatter(logging.Formatter("%(message)s"))
    with handler.batch():
        for i in range(100):
            handler.handle(record(f"{i:03d}" + "x" * 96, level=logging.INFO))   # 100 bytes with its newline
        assert writes == []             # nothing goes out before the batch ends
    handler.handle(record("y" * 5000, level=logging.INFO))                      # longer than PIPE_BUF: alone
    handler.handle(record("after", level=logging.INFO))                         # outside a batch: at once
    os.close(write_end)
    received = b""
    while chunk := os.read(read_end, 65536):
        received += chunk
    os.close(read_end)
    assert all(len(w) <= 4096 and w.endswith(b"\n") for w in writes[:-2])
    assert len(writes) == 3 + 2           # 100 lines of 100 bytes: 40 + 40 + 20 a write
    assert writes[-2] == b"y" * 5000 + b"\n" and writes[-1] == b"after\n"
    lines = received.decode().splitlines()
    assert lines[:100] == [f"{i:03d}" + "x" * 96 for i in range(100)] and lines[100:] == ["y" * 5000, "after"]


def test_a_batch_goes_to_a_regular_file_in_one_write_and_to_a_pipe_in_pipe_buf_pieces(monkeypatch, tmp_path):
    """A log file takes a flush's lines in one write (the file's lock keeps the workers' writes
    apart, whatever their size); a pipe, in whole lines of at most PIPE_BUF bytes."""
    writes: dict[int, list[bytes]] = {}
    real_write = os.write

    def recording_write(fd, data):
        writes.setdefault(fd, []).append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(logs.os, "write", recording_write)
    file_fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    read_end, pipe_fd = os.pipe()
    expected = b"".join(f"{i:03d}{'x' * 96}\n".encode() for i in range(100))
    for fd in (file_fd, pipe_fd):
        handler = logs.LineHandler(fd)
        handler.add_lines(expected.splitlines(keepends=True))
        os.close(fd)
    assert writes[file_fd] == [expected]
    assert (tmp_path / "log").read_bytes() == expected
    assert len(writes[pipe_fd]) == 3 and b"".join(writes[pipe_fd]) == expected
    assert os.read(read_end, 65536) == expected
    os.close(read_end)
    assert logs.write_limit(-1) == 4096       # a descriptor that cannot be told: a pipe's


def test_a_bug_leaves_its_traceback_once_then_one_line_each_time():
    logger = logging.getLogger("test.observe.bugs")
    recorder = Recorder()
    logger.addHandler(recorder)
    logger.propagate = False
    budget = ratelimit.RateLimitedLog(logger, burst=100, clock=Clock())

    def fail(n: int):
        try:
            {}["missing"]
        except KeyError as e:
            budget.bug(f"request {n} failed", e)

    def fail_elsewhere():
        try:
            [][1]
        except IndexError as e:
            budget.bug("request 9 failed", e)

    for n in range(3):
        fail(n)
    fail_elsewhere()
    messages = [r.getMessage() for r in recorder.records]
    assert [("Traceback" in m) for m in messages] == [True, False, False, True]
    assert messages[1] == "request 1 failed: KeyError: 'missing' (its traceback was logged when first seen)"


def test_a_bugs_traceback_held_back_by_the_budget_is_still_owed():
    logger = logging.getLogger("test.observe.owed")
    recorder = Recorder()
    logger.addHandler(recorder)
    logger.propagate = False
    clock = Clock()
    budget = ratelimit.RateLimitedLog(logger, burst=1, interval_s=10, clock=clock)
    budget.log("something else first")

    def fail():
        try:
            raise RuntimeError("bug")
        except RuntimeError as e:
            return budget.bug("it failed", e)

    assert fail() is False              # over the budget: held back, the traceback not yet written
    clock.now += 10
    assert fail() is True
    messages = [r.getMessage() for r in recorder.records]
    assert messages[1] == "1 more error lines in the last 10 s were not logged (rate limit)"
    assert "Traceback" in messages[2]


def test_other_libraries_warnings_take_from_a_budget():
    recorder = Recorder()
    clock = Clock()
    budget = ratelimit.RateLimitedLog(logging.getLogger("test.observe.libs"), burst=10, interval_s=10,
                                      level=logging.WARNING, what="library lines", clock=clock)
    budget.logger.addHandler(recorder)
    budget.logger.propagate = False
    limiter = ratelimit.LibraryLines(budget)
    passed = [limiter.filter(record("Error handling request", name="aiohttp.server")) for _ in range(25)]
    assert passed.count(True) == 10 and budget.suppressed == 15
    assert limiter.filter(record("ours", name="fastinfer.gateway"))              # ours are limited where written
    assert limiter.filter(record("details", level=logging.INFO, name="aiohttp.access"))
    clock.now += 10
    assert limiter.filter(record("later", name="asyncio"))
    assert [r.getMessage() for r in recorder.records] == [
        "15 more library lines in the last 10 s were not logged (rate limit)"]


@pytest.mark.parametrize("fmt, formatter", [("json", logs.JsonFormatter), ("text", logs.TextFormatter)])
def test_setup_logging_puts_every_logger_through_one_handler(monkeypatch, fmt, formatter):
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging._srcfile
    monkeypatch.setattr(logs, "_handler", None)
    try:
        handler = logs.setup_logging("warning", fmt)
        assert root.handlers == [handler] and isinstance(handler.formatter, formatter)
        assert root.level == logging.WARNING
        access_logger = logging.getLogger(logs.ACCESS_LOGGER)
        # the access log is written whatever the level, once (not also through the root)
        assert access_logger.isEnabledFor(logging.INFO) and not access_logger.propagate
        assert access_logger.handlers.count(handler) == 1
        assert logs.setup_logging("error", fmt) is handler and root.level == logging.ERROR
    finally:
        access_logger = logging.getLogger(logs.ACCESS_LOGGER)
        access_logger.handlers.clear()
        access_logger.propagate = True
        access_logger.setLevel(logging.NOTSET)
        root.handlers[:], logging._srcfile = saved[0], saved[2]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def _aiohttp_refusal():
    """What aiohttp's server logs when a client sends something that is not HTTP: its parser's error."""
    from aiohttp.http_exceptions import BadHttpMessage
    try:
        raise BadHttpMessage(f"Invalid header token:\n\n    b'Authorization {SECRET}'\n  ^")
    except BadHttpMessage:
        return sys.exc_info()


def test_a_clients_malformed_request_is_one_warning_line_without_a_traceback():
    budget = ratelimit.RateLimitedLog(logging.getLogger("test.observe.malformed"), burst=10, interval_s=10,
                                      level=logging.WARNING, clock=Clock())
    limiter = ratelimit.LibraryLines(budget)
    line = record("Error handling request from %s", "127.0.0.1", name="aiohttp.server", exc_info=_aiohttp_refusal())
    assert limiter.filter(line)
    assert line.levelno == logging.WARNING and line.exc_info is None and line.exc_text is None
    assert line.getMessage() == ("Error handling request from 127.0.0.1: malformed HTTP request (answered 400): "
                                 "Invalid header token")
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        text = formatter.format(line)
        assert "\n" not in text and "Traceback" not in text and SECRET not in text


def test_a_librarys_traceback_is_written_once_per_bug():
    budget = ratelimit.RateLimitedLog(logging.getLogger("test.observe.libbug"), burst=100, interval_s=10,
                                      level=logging.WARNING, clock=Clock())
    limiter = ratelimit.LibraryLines(budget)

    def library_bug():
        try:
            {}["missing"]
        except KeyError:
            return record("Exception in callback", name="asyncio", exc_info=sys.exc_info())

    first, second = library_bug(), library_bug()
    other = record("Task exception was never retrieved", name="asyncio", exc_info=raised())
    assert limiter.filter(first) and limiter.filter(second) and limiter.filter(other)
    assert first.exc_info is not None and "Traceback" in logs.TextFormatter().format(first)
    assert second.exc_info is None and second.levelno == logging.ERROR
    assert second.getMessage() == "Exception in callback: KeyError: 'missing' (its traceback was logged when first seen)"
    assert other.exc_info is not None          # another bug: its own traceback
