"""Micro-benchmark of the access log: what a request pays on its path, and a line all-in, against the
plain ``logging`` way of writing the same JSON line in the same run.

Run:  python -m pytest bench/micro/test_bench_access_log.py --benchmark-enable -p no:cacheprovider -s

- ``add``: ``AccessLog.add`` alone — what the request's path pays (a tuple kept).
- all-in: ``add`` then the flush that turns kept values into records, formats them as JSON and writes
  them (to /dev/null, batched), per line.
- baseline: ``logger.info(..., extra=fields)`` through a ``StreamHandler`` whose formatter dumps the
  record's fields with orjson — one record, one format and one write per request, all on its path.
With ``--benchmark-disable`` (the default in pyproject) every test runs once, quickly.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import timeit

import orjson
import pytest

from fastinfer.observe import access, logs

FIELDS = dict(request_id="8c1d2e4f5a6b-17", key="team-a", deployment="gpt-4o", fallback=None, replica="r0", status=200,
              attempts=1, stream=False, duration_s=0.012345, ttft_s=None, overhead_s=0.000321, prompt_tokens=812,
              completion_tokens=301, cost_usd=0.00504, error=None, method="POST", path="/v1/chat/completions")
VALUES = tuple(FIELDS.values())     # what ``AccessLog.add`` takes: the values in ``access.FIELDS``' order
assert tuple(name.replace("_ms", "_s") for name in access.FIELDS) == tuple(FIELDS)


class _Loop:
    """``call_later`` that never fires: the benchmark flushes by itself."""

    def call_later(self, delay, callback):
        return asyncio.Handle(callback, (), asyncio.new_event_loop())


class _PlainJson(logging.Formatter):
    def format(self, record):
        return orjson.dumps({"ts": record.created, "level": "info", "logger": record.name, "pid": record.process,
                             **record.fields}).decode()


@pytest.fixture
def devnull_logger(monkeypatch):
    """The access logger writing JSON lines to /dev/null through fastinfer's handler."""
    fd = os.open(os.devnull, os.O_WRONLY)
    handler = logs.LineHandler(fd)
    handler.setFormatter(logs.JsonFormatter())
    monkeypatch.setattr(logs, "_handler", handler)
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield fd
    logger.handlers[:], logger.propagate = saved[:2]
    logger.setLevel(saved[2])       # not ``.level =``: the logger's cached isEnabledFor must go too
    os.close(fd)


def per_line_us(fn, number: int, between=None) -> float:
    """The best of 5 timings of ``number`` calls of ``fn``, per call; ``between`` runs untimed after each."""
    best = float("inf")
    for _ in range(5):
        best = min(best, timeit.timeit(fn, number=number))
        if between is not None:
            between()
    return best / number * 1e6


def test_access_log_line_against_plain_logging(benchmark, devnull_logger):
    log = access.AccessLog(_Loop(), ["gpt-4o"])
    n = 500 if benchmark.disabled else 50_000

    def add():
        log.add(time.time(), VALUES)

    def add_and_flush():
        for _ in range(100):
            log.add(time.time(), VALUES)
        log.flush()

    # fewer than MAX_PENDING at a time, the kept values dropped untimed: ``add`` alone, no flush in it
    add_us = per_line_us(add, min(n, access.AccessLog.MAX_PENDING - 1), between=log._buffer.take)
    all_in_us = per_line_us(add_and_flush, max(n // 100, 5)) / 100

    plain = logging.getLogger("bench.plain-access")
    plain.handlers[:] = [logging.StreamHandler(open(os.devnull, "w"))]
    plain.handlers[0].setFormatter(_PlainJson())
    plain.propagate = False
    plain.setLevel(logging.INFO)
    fields = {k: v for k, v in FIELDS.items()}

    def plain_line():
        plain.info("access", extra={"fields": fields})

    plain_us = per_line_us(plain_line, max(n // 10, 50))
    plain.handlers[0].stream.close()
    benchmark.extra_info.update({"add_us": round(add_us, 3), "all_in_us": round(all_in_us, 3),
                                 "plain_logging_us": round(plain_us, 3),
                                 "plain_over_all_in": round(plain_us / all_in_us, 2),
                                 "plain_over_add": round(plain_us / add_us, 1)})
    print(f"\naccess log: add (on the request's path) {add_us:.3f} us, all-in per line {all_in_us:.3f} us; "
          f"plain logging.info + StreamHandler {plain_us:.3f} us (x{plain_us / all_in_us:.2f} the all-in, "
          f"x{plain_us / add_us:.0f} the request's share)")
    benchmark(add)
    log.flush()
