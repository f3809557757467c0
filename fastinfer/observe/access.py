"""The access log: one line per answered request, built at its end and written after it.

Owns: ``AccessLog.answered`` and ``add`` (called by the gateway once per answer, streams
when they end), which only keep the values — no formatting, no record, no write on the
request's path: the compiled ``_core.access`` — and the flush, a timer every ``FLUSH_S`` that turns what was kept
into lines of the standard ``fastinfer.access`` logger: each line's fields
(``shown_values``) formatted by the handler's formatter (``logs``: text or JSON)
straight into the handler's few whole-line writes, no record between. When
something else would see the records (another handler, a filter), they are records
(``_AccessRecord``: the attributes they share are its class's, no caller lookup),
whose message, ``AccessLine``, gives the same fields to the JSON formatter, or
``key=value`` pairs to the text one — the same line either way. Error texts,
paths and unknown model names are redacted when written; request ids come as the
gateway shows them (a client's redacted); keys appear by name only.

Must not touch: what a request does, its metrics, its status. It is told what happened.
"""
from __future__ import annotations

import logging
import os

from ..redact import redact
from .logs import ACCESS_LOGGER, StructuredMessage, batched_writes, direct_handler, fields_of
#: an access line's fields after ``ts``, in order (the JSON object's keys, the text line's pairs)
FIELDS = ("request_id", "key", "deployment", "fallback", "replica", "status", "attempts", "stream", "duration_ms", "ttft_ms",
          "overhead_ms", "prompt_tokens", "completion_tokens", "cost_usd", "error", "method", "path")
#: the fields that are kept in seconds and shown in milliseconds (``logs.fields_of``)
MILLIS = sum(1 << FIELDS.index(name) for name in ("duration_ms", "ttft_ms", "overhead_ms"))
# the fields that decide whether a line's values are safe as kept (``shown_values``)
_DEPLOYMENT, _ERROR, _PATH = FIELDS.index("deployment"), FIELDS.index("error"), FIELDS.index("path")
_SHOWN_MAX = 256        # characters of a client-chosen string (an unknown model's name, a path) that are shown


def _shown(text: str | None) -> str | None:
    """A client-chosen string as the log shows it: capped and redacted."""
    if text is None:
        return None
    if len(text) > _SHOWN_MAX:
        text = text[:_SHOWN_MAX] + "..."
    return redact(text)


class _ShownPaths(dict):
    """``_shown`` of request paths, remembered: the API's few routes are redacted once, not per line."""

    def __missing__(self, path: str) -> str:
        if len(self) >= 1024:     # a client inventing paths cannot grow this
            self.clear()
        shown = self[path] = _shown(path)
        return shown


_shown_paths = _ShownPaths()


def shown_values(values: tuple, known_deployment: bool) -> tuple:
    """An access line's values (``FIELDS``, in order; durations in seconds) from those ``AccessLog.add``
    kept, made safe: client-chosen strings redacted, an unknown model's name capped. A line with no
    error, of a deployment that exists and a path shown as it is (nearly every line) is safe as kept."""
    if known_deployment and values[_ERROR] is None and _shown_paths[values[_PATH]] == values[_PATH]:
        return values
    (request_id, key, deployment, fallback, replica, status, attempts, stream, duration_s, ttft_s, overhead_s,
     prompt_tokens, completion_tokens, cost_usd, error, method, path) = values
    return (request_id, key, deployment if known_deployment else _shown(deployment), fallback, replica, status,
            attempts, stream, duration_s, ttft_s, overhead_s, prompt_tokens, completion_tokens, cost_usd,
            None if error is None else redact(error), method, _shown_paths[path])


def access_fields(values: tuple, known_deployment: bool) -> dict:
    """An access line's fields (``FIELDS``, in order, durations in milliseconds) from the values
    ``AccessLog.add`` kept, made safe."""
    return fields_of(FIELDS, shown_values(values, known_deployment), MILLIS)


class AccessLine(StructuredMessage):
    """The message of one access record: the raw values ``AccessLog.add`` kept, rendered on demand."""

    __slots__ = ("values", "known_deployment")

    def __init__(self, values: tuple, known_deployment: bool):
        self.values = values
        self.known_deployment = known_deployment

    def fields(self) -> dict:
        return access_fields(self.values, self.known_deployment)


class _AccessRecord(logging.LogRecord):
    """An access record: what every one shares is the class's, an instance holds its time, message and pid.
    (``LogRecord.__init__`` — thread, process, caller — costs more than the rest of the line together.)"""

    name = ACCESS_LOGGER
    levelno = logging.INFO
    levelname = "INFO"
    pathname = filename = module = ""
    lineno = 0
    funcName = exc_info = exc_text = stack_info = thread = threadName = processName = taskName = None
    args = ()
    msecs = relativeCreated = 0.0

    def __init__(self, created: float, msg: AccessLine, process: int):   # not the base's: see above
        self.created = created
        self.msg = msg
        self.process = process


class AccessLog:
    """The access log of one worker. What the request path calls keeps a tuple (``_core.access``:
    ``answered`` for a data request, ``add`` for any other answer); a timer, or the 128th line, writes."""

    # how long a line may wait to be written, and how many may wait: lines are written when either
    # is reached. Kept few: ~550 lines (11k requests a second for 50 ms, then as many formatted
    # lines) peaked the soak's RSS 1.3 MiB higher; 128 is ~10 ms at that rate. Waited long: the
    # timer's flush cost a worker at 1 connection ~12 µs a request at 10 ms and ~2.5 at 50 ms
    # (``bench --concurrency 1 --gateway-cpus 0 --variant log=…``), ~50 at 1 ms.
    FLUSH_S = 0.05
    MAX_PENDING = 128

    def __init__(self, loop, known_deployments=(), id_prefix: str = "", core=None):
        """``id_prefix``: what the gateway's own request ids start with (any other is a client's,
        redacted); ``core``: ``_core.access`` (the tests pass its reference)."""
        if core is None:    # imported by the workers that keep lines, not by the supervisor: its RSS
            from .._core import access as core
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._buffer = core.AccessBuffer(loop, self.flush, self.FLUSH_S, self.MAX_PENDING, id_prefix, redact)
        # ``add(ts, values)``: an answer's ``ts`` (when it arrived, wall clock) and its line's values in
        # ``FIELDS``' order (durations in seconds, the request id as the gateway shows it). One tuple, not
        # seventeen keywords: matching keywords cost more than the rest. ``answered(ts, request_id, data,
        # status, error, duration_s, method, path)``: a data request's, its values read from its record.
        self.add = self._buffer.add
        self.answered = self._buffer.answered
        self._known = frozenset(known_deployments)
        self._pid = os.getpid()

    def flush(self) -> None:
        """Write what is kept as lines of the ``fastinfer.access`` logger now."""
        pending = self._buffer.take()
        logger = self._logger
        if not pending or not logger.isEnabledFor(logging.INFO):
            return
        with batched_writes():
            handler = direct_handler(logger)
            if handler is None:
                self._handle_records(pending)
            else:
                self._write_lines(handler, pending)

    def _write_lines(self, handler, pending: list[tuple]) -> None:
        """Each line formatted from its fields, no record: the lines whose values are safe as kept in
        the formatter's compiled loop when it has one (JSON), every other here; one that fails to format
        (a string orjson refuses) goes the records' way, which reports it as the handler reports any
        line it cannot write."""
        known = self._known
        pid = self._pid
        formatter = handler.formatter
        encoded_line = formatter.encoded_values_line
        batch = getattr(formatter, "stamped_lines", None)
        kept_as_is = (known, _shown_paths, _DEPLOYMENT, _ERROR, _PATH)
        lines = []
        i, n = 0, len(pending)
        while i < n:
            if batch is not None:
                i = batch(pending, i, logging.INFO, ACCESS_LOGGER, pid, FIELDS, MILLIS, kept_as_is, lines)
                if i == n:
                    break
            ts, values = pending[i]
            try:
                lines.append(encoded_line(ts, logging.INFO, ACCESS_LOGGER, pid, FIELDS,
                                          shown_values(values, values[_DEPLOYMENT] in known), MILLIS))
            except Exception:
                handler.add_lines(lines)        # the lines before it first: the order stays
                lines = []
                self._handle_records([(ts, values)])
            i += 1
        handler.add_lines(lines)

    def _handle_records(self, pending: list[tuple]) -> None:
        known = self._known
        pid = self._pid
        logger = self._logger
        for ts, values in pending:
            logger.handle(_AccessRecord(ts, AccessLine(values, values[2] in known), pid))

    def close(self) -> None:
        """Write what is kept; from now on each line as it comes (the worker is draining: its loop
        may end before a timer would fire)."""
        self._buffer.closed = True
        self.flush()
