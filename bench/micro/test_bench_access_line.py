"""Micro-benchmark of one access-log line all-in (``add`` then its share of the flush, written to
/dev/null), JSON and text, against the way lines were made before, measured in the same run.

Run:  python -m pytest bench/micro/test_bench_access_line.py --benchmark-enable -p no:cacheprovider -s

- new: what ``AccessLog.flush`` does now — each line formatted from its fields by the handler's
  formatter (``encoded_line``: bytes with the newline) and handed to the ``LineHandler`` in one go;
  ``redact`` with its precheck.
- baseline (the record way): a ``LogRecord`` per line through ``logger.handle`` (filters, handler lock,
  ``emit``), the formatter's ``format`` with the former logfmt (a generator over each string's
  characters), and ``redact`` as three substitutions on every text.
- the text format's compiled lines (``TextFormatter.stamped_lines``, ``_core.lines``) against the
  same formatter's Python lines (``encoded_values_line``: ``fields_of``, ``logfmt``, ``iso_time``), both
  through ``AccessLog`` all-in; text is the default ``logging.format``.
- ``redact`` alone on a request id, with a few credentials remembered: precheck against three substitutions.
With ``--benchmark-disable`` (the default in pyproject) every test runs once, quickly.
"""
from __future__ import annotations

import time
import timeit

import orjson
import pytest

from fastinfer import redact as redact_module
from fastinfer.observe import access, logs
from test_bench_access_log import VALUES, _Loop, devnull_logger, per_line_us  # noqa: F401 (a fixture)

REMEMBERED = ("sk-replica-credential-0001", "AIzaSyBenchBenchBenchBenchBench01", "plain-credential-value")


def three_substitutions(text: str) -> str:
    """``redact`` before its precheck."""
    return redact_module.redact_unchecked(text) if text else text


def _former_logfmt_value(value) -> str:
    """A value as logfmt showed it before: strings checked by a generator over their characters."""
    if isinstance(value, str):
        return value if value and all(c.isalnum() or c in "-_./:@+" for c in value) else orjson.dumps(value).decode()
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


class _FormerText(logs.TextFormatter):
    def format(self, record):
        pairs = " ".join(f"{n}={_former_logfmt_value(v)}" for n, v in record.msg.fields().items())
        return f"{logs.iso_time(record.created)} {record.levelname} {record.name}[{record.process}]: {pairs}"


class _FormerJson(logs.JsonFormatter):
    def format(self, record):
        out = {"ts": logs.iso_time(record.created), "level": "info", "logger": record.name, "pid": record.process}
        out.update(record.msg.fields())
        return orjson.dumps(out).decode()


def _all_in_us(log: access.AccessLog, n: int) -> float:
    def add_and_flush():
        for _ in range(100):
            log.add(time.time(), VALUES)
        log.flush()
    return per_line_us(add_and_flush, max(n // 100, 5)) / 100


@pytest.mark.usefixtures("devnull_logger")    # the access logger alone on a LineHandler writing to /dev/null
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_line_against_the_record_way(benchmark, monkeypatch, fmt):
    for secret in REMEMBERED:
        redact_module.remember(secret)
    handler = logs._handler
    n = 500 if benchmark.disabled else 50_000
    log = access.AccessLog(_Loop(), ["gpt-4o"])

    new_us = old_us = float("inf")
    for _ in range(3):      # alternated, the best of each: the machine's other load falls on both
        handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
        assert logs.direct_handler(log._logger) is handler
        new_us = min(new_us, _all_in_us(log, n))
        with monkeypatch.context() as former:
            handler.setFormatter(_FormerJson() if fmt == "json" else _FormerText())
            former.setattr(access, "direct_handler", lambda logger: None)
            former.setattr(access, "redact", three_substitutions)
            old_us = min(old_us, _all_in_us(log, n))

    benchmark.extra_info.update({"format": fmt, "new_us": round(new_us, 3), "record_way_us": round(old_us, 3),
                                 "new_over_old": round(new_us / old_us, 3)})
    print(f"\naccess line ({fmt}): {new_us:.3f} us per line all-in; the record way {old_us:.3f} us "
          f"(new/old = {new_us / old_us:.2f})")
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    benchmark(lambda: _all_in_us(log, 500))


class _PythonText(logs.TextFormatter):
    """The text formatter without its compiled loop: every line made by ``encoded_values_line``."""

    stamped_lines = None


@pytest.mark.usefixtures("devnull_logger")
def test_compiled_text_lines_against_the_text_formatters_python(benchmark):
    handler = logs._handler
    n = 500 if benchmark.disabled else 50_000
    log = access.AccessLog(_Loop(), ["gpt-4o"])
    compiled_us = python_us = float("inf")
    for _ in range(3):      # alternated, the best of each
        handler.setFormatter(logs.TextFormatter())
        compiled_us = min(compiled_us, _all_in_us(log, n))
        handler.setFormatter(_PythonText())
        python_us = min(python_us, _all_in_us(log, n))
    benchmark.extra_info.update({"compiled_us": round(compiled_us, 3), "python_us": round(python_us, 3),
                                 "compiled_over_python": round(compiled_us / python_us, 3)})
    print(f"\ntext access line: {compiled_us:.3f} us per line all-in compiled; {python_us:.3f} us in Python "
          f"(compiled/python = {compiled_us / python_us:.2f})")
    handler.setFormatter(logs.TextFormatter())
    benchmark(lambda: _all_in_us(log, 500))


def test_redact_of_a_request_id_against_three_substitutions(benchmark):
    for secret in REMEMBERED:
        redact_module.remember(secret)
    request_id = "0f3a9c1b2d4e5f60a7b8"
    assert redact_module.redact(request_id) == three_substitutions(request_id) == request_id
    number = 1000 if benchmark.disabled else 200_000
    new_us = min(timeit.repeat(lambda: redact_module.redact(request_id), number=number, repeat=5)) / number * 1e6
    old_us = min(timeit.repeat(lambda: three_substitutions(request_id), number=number, repeat=5)) / number * 1e6
    benchmark.extra_info.update({"new_us": round(new_us, 3), "three_substitutions_us": round(old_us, 3),
                                 "new_over_old": round(new_us / old_us, 3)})
    print(f"\nredact(request id): {new_us:.3f} us; three substitutions {old_us:.3f} us (new/old = {new_us / old_us:.2f})")
    benchmark(redact_module.redact, request_id)
