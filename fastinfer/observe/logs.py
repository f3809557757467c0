"""Log set-up: every line of every process through the standard ``logging`` module, as text or JSON.

Owns: ``setup_logging`` (``[logging]`` ``level`` and ``format``), the two formatters
(``text``: ``ts LEVEL logger[pid]: message``; ``json``: one object per line with
``ts``, ``level``, ``logger``, ``pid``, ``msg`` and ``exc``), and ``LineHandler``, the
one handler, writing to standard error: a line at once, or the lines of a
``batched_writes()`` block together (the access log's flush). Writes are whole
lines of at most ``PIPE_BUF`` bytes to a pipe, so the workers sharing one pipe never
interleave inside a line; to a regular file, of up to 64 KiB (a file's write is one
under its lock: the access log's flush is one system call, not one per 4 KiB). Every line is redacted (``fastinfer.redact``) as it is
formatted, but for a ``StructuredMessage`` (an access line), whose maker makes its
fields safe; other libraries' warnings and errors take from a budget (``ratelimit``).
Lines that are only fields need no record: ``direct_handler(logger)`` is the handler
that would write a logger's info records when nothing else would look at them, and
its formatter's ``encoded_values_line`` makes the very line ``format`` would of a record whose
message has those fields, encoded with its newline (the access log's flush writes its lines so,
with ``add_lines``: bytes end to end; the JSON one in one compiled pass, ``_core.lines``).

Must not touch: what is logged, or when (callers decide); the access log's fields
(``access``).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import select
import stat
import sys
import time

import orjson

from .._core.lines import pipe_pieces, stamped_line, stamped_lines
from ..redact import redact
from .ratelimit import LIBRARY_LINES, LibraryLines

ACCESS_LOGGER = "fastinfer.access"

_PIPE_BUF = 4096      # writes up to this size to a pipe are never interleaved with another process's
# a regular file's write is one under its inode's lock, whatever its size: the workers' lines cannot
# interleave, so a batch goes out in writes this large (a log file, as the bench's; a pipe to a
# collector keeps PIPE_BUF). The access log's flush (at most 128 lines, ~60 KB) is one write, where
# 4 KiB pieces made fifteen; and no piece is so large that joining it costs the heap a spike.
_FILE_WRITE = 64 * 1024


def write_limit(fd: int) -> int:
    """The most a write of whole lines to ``fd`` may hold: ``_FILE_WRITE`` to a regular file,
    ``_PIPE_BUF`` to anything else (a pipe, a terminal, a socket, or an ``fd`` that cannot be told)."""
    try:
        return _FILE_WRITE if stat.S_ISREG(os.fstat(fd).st_mode) else _PIPE_BUF
    except OSError:
        return _PIPE_BUF


_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]
_MILLIS_ENCODED = [millis.encode() for millis in _MILLIS]


class _Timestamps:
    """ISO 8601 UTC timestamps with milliseconds; the part up to the second is formatted once a second,
    the rest looked up; as text, or encoded (``encoded``: an access line's, bytes end to end)."""

    __slots__ = ("_second", "_prefix", "_prefix_encoded")

    def __init__(self):
        self._second = -1
        self._prefix = ""
        self._prefix_encoded = b""

    def __call__(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._renew(second)
        ms = int((t - second) * 1000)
        return self._prefix + _MILLIS[ms] if ms >= 0 else f"{self._prefix}.{ms:03d}Z"   # < 0: before 1970

    def encoded(self, t: float) -> bytes:
        second = int(t)
        if second != self._second:
            self._renew(second)
        ms = int((t - second) * 1000)
        return self._prefix_encoded + _MILLIS_ENCODED[ms] if ms >= 0 else self(t).encode()

    def _renew(self, second: int) -> None:
        self._second = second
        self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._prefix_encoded = self._prefix.encode()


iso_time = _Timestamps()


class StructuredMessage:
    """A record's message that is fields, not a sentence (an access line): the JSON formatter puts
    ``fields()`` in the line's object, the text one writes ``logfmt()``. Its fields are shown as
    they are, unredacted: whoever builds one makes them safe."""

    __slots__ = ()

    def fields(self) -> dict:
        raise NotImplementedError

    def logfmt(self) -> str:
        return logfmt(self.fields())

    def __str__(self) -> str:
        return self.logfmt()


def logfmt(fields: dict) -> str:
    """``name=value`` pairs; strings with other than letters, digits and ``-_./:@+`` quoted, ``-`` for absent."""
    parts = []
    for name, value in fields.items():      # _logfmt_value inlined for the common types: per line
        if value is None:
            parts.append(f"{name}=-")
        elif type(value) is str:
            parts.append(f"{name}={value}" if value.isalnum() else f"{name}={_logfmt_str(value)}")
        elif type(value) is int:
            parts.append(f"{name}={value}")
        else:
            parts.append(f"{name}={_logfmt_value(value)}")
    return " ".join(parts)


_bare = re.compile(r"[\w\-./:@+]+").fullmatch    # \w: what str.isalnum() accepts, and "_"


@functools.lru_cache(maxsize=1024)     # a line's paths, models, keys recur: checked once
def _logfmt_str(value: str) -> str:
    return value if _bare(value) else orjson.dumps(value).decode()


def _logfmt_value(value) -> str:
    if value is None:
        return "-"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _logfmt_str(str(value))
    return str(value)


class TextFormatter(logging.Formatter):
    """``2024-05-01T12:00:00.123Z WARNING fastinfer.worker[4242]: message``, a traceback on the next lines.
    An access line's message is its fields as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if isinstance(msg, StructuredMessage):
            message = msg.logfmt()
        else:
            message = redact(record.getMessage())
        line = f"{iso_time(record.created)} {record.levelname} {record.name}[{record.process}]: {message}"
        detail = _exception_text(self, record)
        return f"{line}\n{detail}" if detail else line

    def encoded_line(self, created: float, levelno: int, name: str, pid: int, fields: dict) -> bytes:
        """The line ``format`` makes of a record whose message is a ``StructuredMessage`` with ``fields``,
        encoded as ``LineHandler`` writes it, with its newline."""
        return _encoded(f"{iso_time(created)} {logging.getLevelName(levelno)} {name}[{pid}]: {logfmt(fields)}")

    def encoded_values_line(self, created: float, levelno: int, name: str, pid: int, names: tuple, values: tuple,
                            millis: int = 0) -> bytes:
        """``encoded_line`` of the fields ``names`` with ``values`` (``fields_of``)."""
        return self.encoded_line(created, levelno, name, pid, fields_of(names, values, millis))

    def stamped_lines(self, pending: list, start: int, levelno: int, name: str, pid: int, names: tuple, millis: int,
                      kept_as_is: tuple, out: list) -> int:
        """``encoded_values_line`` of each ``(created, values)`` of ``pending`` from ``start`` on, appended to
        ``out`` in one compiled loop (``_core.lines.stamped_lines``, its text lines: ~12x cheaper than
        this class's Python) while its values may be written as kept and in ASCII; the index of the
        first line left to the caller (``len(pending)``: none). The JSON formatter's twin."""
        return stamped_lines(pending, start, _text_envelope(levelno, name, pid), _text_names(names), millis,
                             kept_as_is, out, True)


_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
                logging.CRITICAL: "critical"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``pid``, then ``msg`` (and ``exc`` with a
    traceback) — or, for an access record, its fields."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if isinstance(msg, StructuredMessage):
            return self.encoded_line(record.created, record.levelno, record.name, record.process,
                                     msg.fields())[:-1].decode()
        else:
            out = {"ts": iso_time(record.created), "level": record.levelname.lower(), "logger": record.name,
                   "pid": record.process, "msg": redact(record.getMessage())}
            detail = _exception_text(self, record)
            if detail:
                out["exc"] = detail
        return orjson.dumps(out).decode()

    def encoded_line(self, created: float, levelno: int, name: str, pid: int, fields: dict) -> bytes:
        """The line ``format`` makes of a record whose message is a ``StructuredMessage`` with ``fields``:
        the object ``{"ts", "level", "logger", "pid", **fields}`` and its newline, as ``LineHandler``
        writes it; the constant middle serialized once, the rest by orjson straight to bytes."""
        if not fields or not _ENVELOPE_KEYS.isdisjoint(fields):
            out = {"ts": iso_time(created), "level": _LEVEL_NAMES.get(levelno, "info"), "logger": name, "pid": pid}
            out.update(fields)
            return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)
        rest = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)     # {…}\n: its brace goes
        return _head(created, levelno, name, pid) + rest[1:]

    def encoded_values_line(self, created: float, levelno: int, name: str, pid: int, names: tuple, values: tuple,
                            millis: int = 0) -> bytes:
        """``encoded_line`` of the fields ``names`` with ``values`` (``fields_of``), written in one compiled
        pass, its timestamp too (``_core.lines.stamped_line``: orjson's rendering, no dict between)."""
        keys = _ENCODED_NAMES.get(names)
        if keys is None:
            keys = _encoded_names(names)
            if keys is None:        # no field, or one named as the envelope's: the line orjson makes of the dict
                return self.encoded_line(created, levelno, name, pid, fields_of(names, values, millis))
        return stamped_line(created, _envelope(levelno, name, pid), keys, values, millis)

    def stamped_lines(self, pending: list, start: int, levelno: int, name: str, pid: int, names: tuple, millis: int,
                      kept_as_is: tuple, out: list) -> int:
        """``encoded_values_line`` of each ``(created, values)`` of ``pending`` from ``start`` on, appended to
        ``out`` in one compiled loop (``_core.lines.stamped_lines``) while its values may be written as
        kept (``kept_as_is``, as that function reads it); the index of the first line left to the
        caller (``len(pending)``: none)."""
        keys = _ENCODED_NAMES.get(names) or _encoded_names(names)
        if keys is None:
            return start
        return stamped_lines(pending, start, _envelope(levelno, name, pid), keys, millis, kept_as_is, out)


def _head(created: float, levelno: int, name: str, pid: int) -> bytes:
    """A JSON line up to its first field: ``{"ts":…,"level":…,"logger":…,"pid":…,``."""
    return b'{"ts":"' + iso_time.encoded(created) + _envelope(levelno, name, pid)


_ENVELOPE_KEYS = frozenset(("ts", "level", "logger", "pid"))
_ENVELOPES: dict[tuple, bytes] = {}
_ENCODED_NAMES: dict[tuple, tuple] = {}


def _encoded_names(names: tuple) -> tuple | None:
    """Each name as a JSON object's key (``"name":``); None for no name (the envelope's own object) or
    when one is the envelope's."""
    if not names or not _ENVELOPE_KEYS.isdisjoint(names):
        return None
    if len(_ENCODED_NAMES) >= 64:      # callers pass a few constant tuples
        _ENCODED_NAMES.clear()
    keys = _ENCODED_NAMES[names] = tuple(orjson.dumps(n) + b":" for n in names)
    return keys


def fields_of(names: tuple, values: tuple, millis: int = 0) -> dict:
    """The fields ``names`` with ``values``, a value whose bit is set in ``millis`` being seconds
    shown as milliseconds to 3 decimals (``int(s * 1e6 + 0.5) / 1000``: a third of ``round``'s cost)."""
    return {name: int(value * 1e6 + 0.5) / 1000 if value is not None and millis >> i & 1 else value
            for i, (name, value) in enumerate(zip(names, values))}


def _envelope(levelno: int, name: str, pid: int) -> bytes:
    """``","level":…,"logger":…,"pid":…,``: what follows the timestamp's value, as orjson writes it."""
    encoded = _ENVELOPES.get((levelno, name, pid))
    if encoded is None:
        if len(_ENVELOPES) >= 64:       # a process has a few loggers; a pid changes by forking
            _ENVELOPES.clear()
        encoded = _ENVELOPES[levelno, name, pid] = b'",' + orjson.dumps(
            {"level": _LEVEL_NAMES.get(levelno, "info"), "logger": name, "pid": pid})[1:-1] + b","
    return encoded


@functools.lru_cache(maxsize=64)     # a process has a few loggers; a pid changes by forking
def _text_envelope(levelno: int, name: str, pid: int) -> bytes:
    """`` INFO fastinfer.access[4242]: ``: what follows a text line's timestamp, as ``_encoded`` writes it."""
    return f" {logging.getLevelName(levelno)} {name}[{pid}]: ".encode("utf-8", "backslashreplace")


@functools.lru_cache(maxsize=64)     # callers pass a few constant tuples
def _text_names(names: tuple) -> tuple:
    """Each name as a text line's pair starts: ``name=``."""
    return tuple(f"{n}=".encode("utf-8", "backslashreplace") for n in names)


def _encoded(line: str) -> bytes:
    """A formatted line as it is written: UTF-8 (what cannot be, escaped) and its newline."""
    return line.encode("utf-8", "backslashreplace") + b"\n"


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback and stack, redacted (an exception's message may quote an upstream)."""
    parts = []
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = formatter.formatException(record.exc_info)
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return redact("\n".join(parts)) if parts else ""


class LineHandler(logging.Handler):
    """Formatted lines to a file descriptor (standard error): written at once, or, inside
    ``batch()``, together when the batch ends."""

    def __init__(self, fd: int = 2):
        super().__init__()
        self.fd = fd
        self._write_limit = write_limit(fd)
        self._lines: list[bytes] = []      # encoded, each with its newline
        self._batching = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(_encoded(line))
        if not self._batching:
            self._write()

    def add_lines(self, lines: list[bytes]) -> None:
        """Lines formatted without a record (``encoded_line``): written as ``emit`` writes its lines."""
        with self.lock:
            self._lines += lines
            if not self._batching:
                self._write()

    @contextlib.contextmanager
    def batch(self):
        """The lines emitted inside go out in as few writes as whole lines allow."""
        with self.lock:
            self._batching += 1
            try:
                yield
            finally:
                self._batching -= 1
                if not self._batching:
                    self._write()

    def flush(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        """The buffered lines, in writes of whole lines of at most ``write_limit`` bytes (longer lines alone)."""
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        for piece in pipe_pieces(lines, self._write_limit):
            self._write_all(piece)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                # a non-blocking descriptor handed to us: wait a little, never spin, never raise
                if not select.select([], [self.fd], [], 1.0)[1]:
                    return
                continue
            except OSError:
                return    # standard error is gone: nothing to write to
            view = view[n:]


_handler: LineHandler | None = None


def direct_handler(logger: logging.Logger) -> LineHandler | None:
    """The ``LineHandler`` that alone writes ``logger``'s info records when no filter (but ``LibraryLines``,
    which passes them) would look at them and its formatter has ``encoded_line``; else None (records then)."""
    if not logger.isEnabledFor(logging.INFO) or logger.filters or logger.propagate or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if (type(handler) is not LineHandler or handler.level > logging.INFO
            or not hasattr(handler.formatter, "encoded_values_line")
            or any(type(f) is not LibraryLines for f in handler.filters)):
        return None
    return handler


def setup_logging(level: str = "info", format: str = "text") -> LineHandler:
    """Every logger of the process through one ``LineHandler`` on standard error, at ``level``, in
    ``format``. Called again (a reload), it changes the level and format of the same handler.
    The access logger writes whatever ``level`` says: ``logging.access_log`` switches it."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):   # standard error replaced by something in memory
            fd = 2
        _handler = LineHandler(fd)
        for old in list(root.handlers):
            root.removeHandler(old)
        _handler.addFilter(LibraryLines(LIBRARY_LINES))
        root.addHandler(_handler)
        logging.captureWarnings(True)
        # fields no formatter of ours shows: not worth their cost on every record
        logging.logThreads = False
        logging.logMultiprocessing = False
        # the caller's file and line: our lines name their logger instead, and findCaller walks frames
        logging._srcfile = None
    _handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root.setLevel(level.upper())
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO)
    access.propagate = False
    if _handler not in access.handlers:
        access.addHandler(_handler)
    return _handler


@contextlib.contextmanager
def batched_writes():
    """Log lines emitted inside are written together at the end (the access log's flush)."""
    if _handler is None:
        yield
        return
    with _handler.batch():
        yield
