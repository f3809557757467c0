"""The one way fastinfer writes error lines that outside input can trigger: rate-limited, redacted.

Owns: ``RateLimitedLog``, a budget of ``burst`` lines per ``interval_s`` (past it,
lines are counted, and one line says how many were held back when the interval
ends), and ``bug``, for an exception nobody expected: its traceback is written
the first time that bug (the exception type and the lines it was raised through)
is seen in this process, a one-line summary each later time, both within the
budget. ``ERRORS`` is the process's budget for internal errors; a concern with its
own voice (the admin authentication failures) makes its own instance; ``LibraryLines``
holds other libraries' warning and error lines to a budget of their own, and to the same
rule: what a client caused (a request that is not HTTP, which aiohttp's server logs with a
traceback) is one warning line, and a library's traceback is written once per bug.

A client sending garbage, or an upstream answering it, therefore cannot flood the
log, and a recurring bug leaves one traceback, not one per request.

Must not touch: anything the request path decides. Every call here is on an
error path; nothing on the hot path calls it.
"""
from __future__ import annotations

import logging
import threading
import sys
import time
import traceback

from ..redact import redact

_MAX_KNOWN_BUGS = 1024     # bug sites remembered (their traceback is not written again)


class RateLimitedLog:
    """At most ``burst`` lines per ``interval_s`` through ``logger``; past that, a count of what was held back.

    The count is written when the interval ends (by a timer on the running loop, or
    by the next line when there is no loop), so it is written even if nothing follows.
    Safe to call from any thread.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 10, interval_s: float = 10.0,
                 level: int = logging.ERROR, what: str = "error lines", clock=time.monotonic):
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.level = level
        self.what = what                  # how the held-back line names what it counts
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._written = 0
        self.suppressed = 0
        self._timer = None      # an asyncio.TimerHandle while a count is due
        self._known_bugs: dict[tuple, None] = {}

    def log(self, message: str, *, logger: logging.Logger | None = None) -> bool:
        """Write ``message`` (redacted) if the budget allows; True when it was written."""
        if not self.admit():
            return False
        (logger or self.logger).log(self.level, "%s", redact(message))
        return True

    def admit(self) -> bool:
        """Take one line from the budget: True when it may be written, else it is counted."""
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.interval_s:
                self._flush_locked()
                self._window_start = now
                self._written = 0
            if self._written >= self.burst:
                self.suppressed += 1
                if self._timer is None:
                    self._arm_timer(self._window_start + self.interval_s - now)
                return False
            self._written += 1
            return True

    def bug(self, what: str, error: BaseException, *, logger: logging.Logger | None = None) -> bool:
        """An exception nobody expected: ``what`` with its traceback the first time this bug is seen
        in this process, a one-line summary after that; within the budget either way."""
        site = _site(error)
        first = self.first_sighting(site)
        if first:
            text = "".join(traceback.format_exception(error)).rstrip()
            message = f"{what}:\n{text}"
        else:
            message = f"{what}: {_summary(error)}"
        written = self.log(message, logger=logger)
        if first and not written:
            with self._lock:       # held back: the traceback is still owed to the log
                self._known_bugs.pop(site, None)
        return written

    def first_sighting(self, site: tuple) -> bool:
        """Whether the bug at ``site`` (``_site``) is seen for the first time; it is known from now on."""
        with self._lock:
            if site in self._known_bugs:
                return False
            self._known_bugs[site] = None
            if len(self._known_bugs) > _MAX_KNOWN_BUGS:
                del self._known_bugs[next(iter(self._known_bugs))]
            return True

    def flush(self) -> None:
        """Write the count of held-back lines now, if any."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.suppressed:
            self.logger.log(self.level, "%d more %s in the last %g s were not logged (rate limit)",
                            self.suppressed, self.what, self.interval_s)
            self.suppressed = 0

    def _arm_timer(self, delay_s: float) -> None:
        # asyncio is not imported here: a process that never loaded it (the supervisor) runs no loop
        asyncio = sys.modules.get("asyncio")
        try:
            loop = asyncio.get_running_loop() if asyncio is not None else None
        except RuntimeError:
            loop = None
        if loop is None:
            return      # no loop in this thread: the next line writes the count
        self._timer = loop.call_later(max(0.0, delay_s), self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._clock() - self._window_start >= self.interval_s:
                self._flush_locked()
            elif self.suppressed:
                self._arm_timer(self._window_start + self.interval_s - self._clock())


def _site(error: BaseException) -> tuple:
    """What makes two exceptions the same bug: the type and the lines it was raised through (a
    message may name the request or the replica, which change every time)."""
    return (type(error), *((f.filename, f.lineno) for f in traceback.extract_tb(error.__traceback__)))


def _summary(error: BaseException) -> str:
    return f"{type(error).__name__}: {error} (its traceback was logged when first seen)"


class LibraryLines(logging.Filter):
    """The lines other libraries (aiohttp, asyncio, OpenTelemetry's exporter) write at warning or above
    take from a budget too: a client or a collector misbehaving cannot flood the log through them.
    A request that is not HTTP is the client's doing, not a bug: the gateway's listener answers and
    logs it itself (``gateway/protocol.py``, one warning line); should aiohttp still log one (another
    listener, a later aiohttp), its line becomes one warning too, without the traceback it attaches.
    Any other traceback is written the first time its bug is seen, a one-line summary after that.
    fastinfer's own lines are limited where they are written (``RateLimitedLog``) and pass."""

    def __init__(self, budget: RateLimitedLog):
        super().__init__()
        self.budget = budget

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name.startswith("fastinfer"):
            return True
        if not self.budget.admit():
            return False
        error = record.exc_info[1] if record.exc_info else None
        if _is_malformed_http(error):
            _without_traceback(record, f"malformed HTTP request (answered {error.code}): {_first_line(error)}",
                               logging.WARNING)
        elif error is not None and not self.budget.first_sighting(_site(error)):
            _without_traceback(record, _summary(error), record.levelno)
        return True


def _is_malformed_http(error: BaseException | None) -> bool:
    """aiohttp's parser refused the request. Looked up, not imported: the supervisor, which logs through
    this filter too, never loads aiohttp (and so never meets such an error)."""
    module = sys.modules.get("aiohttp.http_exceptions")
    return module is not None and isinstance(error, module.HttpProcessingError)


def _first_line(error) -> str:
    """The parser's complaint without the client's bytes it quotes (after a colon, or on the next lines)."""
    lines = (error.message or "").strip().splitlines()
    return (lines[0].split(": ", 1)[0].rstrip(":") if lines else type(error).__name__)[:200]


def _without_traceback(record: logging.LogRecord, detail: str, level: int) -> None:
    """``record`` as one line: its message and ``detail``, at ``level``, no traceback."""
    record.msg = f"{record.getMessage()}: {detail}"
    record.args = ()
    record.exc_info = record.exc_text = None
    record.levelno, record.levelname = level, logging.getLevelName(level)


#: the process's budget for internal errors: bugs, upstream answers that could not be read
ERRORS = RateLimitedLog(logging.getLogger("fastinfer"), what="error lines")
#: the budget of other libraries' warning and error lines (``LibraryLines``)
LIBRARY_LINES = RateLimitedLog(logging.getLogger("fastinfer"), level=logging.WARNING,
                               what="warning and error lines of other libraries")


def log_bug(logger: logging.Logger, what: str, error: BaseException) -> bool:
    """``ERRORS.bug`` through ``logger``: the usual way to report an exception nobody expected."""
    return ERRORS.bug(what, error, logger=logger)
