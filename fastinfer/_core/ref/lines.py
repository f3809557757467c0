"""Pure-Python reference of ``fastinfer._core.lines``: a JSON object line, orjson's rendering of each value;
a text line, ``logfmt``'s rendering of each.

Must not touch: which fields a line has (``observe.access``), logging.
"""
from __future__ import annotations

import time

import orjson


def json_line(head: bytes, keys: tuple, values: tuple, millis: int = 0) -> bytes:
    """``head``, ``keys[i]`` and ``values[i]`` rendered by orjson for every i, then ``}`` and a newline;
    a value whose bit is set in ``millis`` is seconds, written as ``int(s * 1e6 + 0.5) / 1000``."""
    if len(values) != len(keys):
        raise ValueError("json_line: one value per key")
    parts = [head]
    for i, (key, value) in enumerate(zip(keys, values)):
        if value is not None and i < 64 and millis >> i & 1:
            value = _millis(value)
        elif not (value is None or type(value) in (str, float, bool) or isinstance(value, int)):
            raise TypeError(f"json_line writes None, bool, int, float and str, not {type(value).__name__}")
        parts.append((b"," if i else b"") + key + orjson.dumps(value))
    parts.append(b"}\n")
    return b"".join(parts)


# the ASCII characters a logfmt string may have unquoted (``observe.logs._bare``)
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:@+")


def logfmt_line(head: bytes, keys: tuple, values: tuple, millis: int = 0) -> bytes:
    """``head``, ``keys[i]`` and ``values[i]`` as ``logfmt`` shows it for every i, space-separated, then a
    newline; a non-ASCII string, an integer outside 64 bits or a subclass of int or float raises."""
    if len(values) != len(keys):
        raise ValueError("json_line: one value per key")
    parts = []
    for i, (key, value) in enumerate(zip(keys, values)):
        if value is not None and i < 64 and millis >> i & 1:
            text = repr(_millis(value))
        elif value is None:
            text = "-"
        elif type(value) is bool:
            text = "true" if value else "false"
        elif type(value) is int:
            if not -2**63 <= value < 2**64:
                raise TypeError("Integer exceeds 64-bit range")
            text = str(value)
        elif type(value) is float:
            text = repr(value)
        elif type(value) is str:
            if not value.isascii():
                raise ValueError("logfmt_line: a non-ASCII string is the caller's to write")
            text = value if value and _BARE.issuperset(value) else orjson.dumps(value).decode()
        else:
            raise TypeError(f"logfmt_line writes None, bool, int, float and str, not {type(value).__name__}")
        parts.append(key + text.encode())
    return head + b" ".join(parts) + b"\n"


def _millis(seconds) -> float:
    if type(seconds) is not float and (type(seconds) is bool or not isinstance(seconds, int)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    return int(seconds * 1e6 + 0.5) / 1000      # NaN: ValueError; an infinity: OverflowError


_LAST_STAMPED = 253402300800.0     # 10000-01-01: four-digit years only


def stamped_line(created: float, envelope: bytes, keys: tuple, values: tuple, millis: int = 0,
                 text: bool = False) -> bytes:
    """``json_line`` whose head is ``{"ts":"`` with ``created`` as ISO 8601 UTC with milliseconds, and
    ``envelope``; with ``text``, ``logfmt_line`` whose head is the bare timestamp and ``envelope``. A
    time before 1970 or past 9999 raises."""
    if not 0.0 <= created < _LAST_STAMPED:
        raise ValueError(f"cannot write {created!r} as a timestamp")
    second = int(created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((created - second) * 1000):03d}Z"
    if text:
        return logfmt_line(stamp.encode() + envelope, keys, values, millis)
    return json_line(b'{"ts":"' + stamp.encode() + envelope, keys, values, millis)


def stamped_lines(pending: list, start: int, envelope: bytes, keys: tuple, millis: int, kept_as_is: tuple,
                  out: list, text: bool = False) -> int:
    """``stamped_line`` of each ``(created, values)`` of ``pending`` from ``start`` on, appended to ``out``,
    while its values may be written as kept (``kept_as_is``: ``(known, shown, deployment_at, error_at,
    path_at)``); the index of the first that may not or cannot be, else ``len(pending)``."""
    known, shown, deployment_at, error_at, path_at = kept_as_is
    for i in range(start, len(pending)):
        created, values = pending[i]
        path = values[path_at]
        if values[error_at] is not None or values[deployment_at] not in known or shown.get(path) != path:
            return i
        try:
            out.append(stamped_line(created, envelope, keys, values, millis, text))
        except Exception:
            return i
    return len(pending)


def pipe_pieces(lines: list, limit: int) -> list:
    """``lines`` joined in order into pieces of at most ``limit`` bytes, a longer line alone."""
    pieces, piece, size = [], [], 0
    for line in lines:
        if piece and size + len(line) > limit:
            pieces.append(b"".join(piece))
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        pieces.append(b"".join(piece))
    return pieces
