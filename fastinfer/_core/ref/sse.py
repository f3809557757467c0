"""Pure-Python reference of the SSE parser and writer (``fastinfer._core.sse``).

Owns: the WHATWG event-stream interpretation
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
of a byte stream fed in arbitrary pieces, and the encoding of events into that
format. Same API and behaviour as the compiled module; written to be slow and
obvious, because it is the oracle the tests compare the compiled parser against.

Must not touch: HTTP, asyncio, JSON. It sees bytes and returns ``Event``
objects; what a ``data`` payload means (JSON, ``[DONE]``) is the caller's
business.

Behaviour, beyond the spec text:

* Works on bytes. ``data`` stays bytes, passed through as sent (not validated
  as UTF-8, no replacement characters); ``event`` and ``id``
  values are decoded to ``str`` with ``errors="replace"``.
* ``Event.id`` is the last event ID buffer at dispatch time, or ``None`` if no
  valid ``id`` field was seen in this stream. ``SSEParser.last_event_id`` is the
  spec's "last event ID string": ``""`` until the first blank line, then the
  buffer's value (or ``""``) at each blank line.
* ``Event.retry`` is the value of the last valid ``retry`` field of the block
  that produced the event, else ``None``; ``reconnection_time`` keeps the last
  valid value across blocks. A digit string too long for ``int()`` is ignored.
* ``close()`` ends the stream: a pending partial line or event is discarded and
  ``[]`` returned. Feeding afterwards starts a new stream (reconnection): BOM
  check, buffers and the last event ID buffer start afresh; ``last_event_id``
  and ``reconnection_time`` are kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Event", "SSEParser", "encode_event", "encode_data", "first_marker", "plain_prefix", "whole_events"]

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"[\r\n]")
_SPLIT_LINES = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event."""

    event: str = "message"
    data: bytes = b""
    id: str | None = None
    retry: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event, str):
            raise TypeError(f"event must be str, not {type(self.event).__name__}")
        if not isinstance(self.data, bytes):
            raise TypeError(f"data must be bytes, not {type(self.data).__name__}")
        if self.id is not None and not isinstance(self.id, str):
            raise TypeError(f"id must be str or None, not {type(self.id).__name__}")
        if self.retry is not None and not isinstance(self.retry, int):
            raise TypeError(f"retry must be int or None, not {type(self.retry).__name__}")


def _as_bytes(chunk) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    return bytes(memoryview(chunk))


class SSEParser:
    """Incremental WHATWG event-stream parser; feed it bytes, get events."""

    __slots__ = (
        "_last_event_id",
        "_reconnection_time",
        "_pending",
        "_bom_checked",
        "_skip_lf",
        "_data",
        "_event_type",
        "_id_buffer",
        "_block_retry",
    )

    def __init__(self) -> None:
        self._last_event_id = ""
        self._reconnection_time = None
        self._new_stream()

    @property
    def last_event_id(self) -> str:
        return self._last_event_id

    @property
    def reconnection_time(self) -> int | None:
        return self._reconnection_time

    def _new_stream(self) -> None:
        self._pending = b""  # bytes of an unfinished line
        self._bom_checked = False
        self._skip_lf = False  # previous chunk ended with CR: a leading LF is part of it
        self._data = b""
        self._event_type = b""
        self._id_buffer = None
        self._block_retry = None

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._pending + _as_bytes(chunk)
        self._pending = b""
        if not self._bom_checked:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._pending = buf  # could still become a BOM
                return []
            if buf.startswith(_BOM):
                buf = buf[len(_BOM):]
            self._bom_checked = True
        events: list[Event] = []
        pos = 0
        if self._skip_lf and buf:
            self._skip_lf = False
            if buf[0:1] == b"\n":
                pos = 1
        while True:
            m = _LINE_END.search(buf, pos)
            if m is None:
                self._pending = buf[pos:]
                return events
            end = m.start()
            self._process_line(buf[pos:end], events)
            if buf[end:end + 1] == b"\r":
                if end + 1 == len(buf):
                    self._skip_lf = True
                    pos = end + 1
                elif buf[end + 1:end + 2] == b"\n":
                    pos = end + 2
                else:
                    pos = end + 1
            else:
                pos = end + 1

    def close(self) -> list[Event]:
        self._new_stream()
        return []

    def _process_line(self, line: bytes, events: list[Event]) -> None:
        if line == b"":
            self._dispatch(events)
            return
        if line.startswith(b":"):
            return
        if b":" in line:
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
        else:
            field, value = line, b""
        if field == b"event":
            self._event_type = value
        elif field == b"data":
            self._data += value + b"\n"
        elif field == b"id":
            if b"\x00" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
        elif field == b"retry":
            if value.isdigit():  # bytes.isdigit: ASCII digits only, False if empty
                try:
                    retry = int(value)
                except ValueError:  # longer than sys.get_int_max_str_digits()
                    return
                self._block_retry = retry
                self._reconnection_time = retry
        # any other field is ignored

    def _dispatch(self, events: list[Event]) -> None:
        self._last_event_id = self._id_buffer if self._id_buffer is not None else ""
        retry = self._block_retry
        self._block_retry = None
        if self._data == b"":
            self._event_type = b""
            return
        data = self._data
        if data.endswith(b"\n"):
            data = data[:-1]
        event_type = self._event_type.decode("utf-8", "replace") or "message"
        events.append(Event(event_type, data, self._id_buffer, retry))
        self._data = b""
        self._event_type = b""


def _check_field(name: str, value) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if b"\n" in value or b"\r" in value:
        raise ValueError(f"{name} must not contain a line break")
    return value


def encode_event(data: bytes, event: bytes | None = None, id: bytes | None = None) -> bytes:
    """Encode one event: optional ``event:`` and ``id:`` lines, one ``data:``
    line per line of ``data`` (split on LF, CRLF and CR), then a blank line."""
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    out = b""
    if event is not None:
        out += b"event: " + _check_field("event", event) + b"\n"
    if id is not None:
        if b"\x00" in _check_field("id", id):
            raise ValueError("id must not contain NUL")
        out += b"id: " + id + b"\n"
    for line in _SPLIT_LINES.split(data):
        out += b"data: " + line + b"\n"
    return out + b"\n"


def encode_data(data: bytes) -> bytes:
    """Encode a data-only event (the common streaming case)."""
    return encode_event(data)


def _check_markers(markers: tuple) -> None:
    if len(markers) > 8:
        raise ValueError("at most 8 markers")
    if not all(type(m) is bytes and m for m in markers):
        raise TypeError("markers must be non-empty bytes")
    if any(b"\n" in m for m in markers):
        raise ValueError("a marker must not hold a line feed")


def first_marker(events: bytes, markers: tuple, wide: bool = True) -> int:
    """Where the first of ``markers`` starts in ``events``, -1 for none (``wide``: the compiled
    module's choice of search, the same answer)."""
    _check_markers(markers)
    return min((at for at in (events.find(m) for m in markers) if at >= 0), default=-1)


def plain_prefix(events: bytes, markers: tuple, offset: int = 0) -> tuple[int, int]:
    """``(end, data_lines)``: the leading events of ``events[offset:]`` a relay may forward unparsed
    (each ends in ``"}\\n\\n"`` and holds no marker: at most 8, non-empty, without a line feed), and
    the lines among them that start with ``data:``."""
    _check_markers(markers)
    if not 0 <= offset <= len(events):
        raise ValueError("offset out of range")
    end = offset
    while (stop := events.find(b"\n\n", end)) >= 0:
        event = events[end:stop]
        if not event.endswith(b"}") or any(m in event for m in markers):
            break
        end = stop + 2
    return end, events.count(b"\ndata:", offset, end) + events.startswith(b"data:", offset, end)


def whole_events(carry: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """Split what has arrived into (the whole SSE events, the partial one to carry to the next read).

    Relays forward only whole events, so that an error event can always be appended cleanly.
    """
    if carry is None or chunk is None:
        raise TypeError("whole_events takes bytes, not None")
    buf = carry + chunk if carry else chunk
    end = last_event_end(buf)
    if end == len(buf):
        return buf, b""
    return buf[:end], buf[end:]


def last_event_end(buf: bytes) -> int:
    """Offset just past the last complete SSE event in ``buf`` (0 if none)."""
    if buf.endswith(b"\n\n"):
        return len(buf)
    end = buf.rfind(b"\n\n")
    end = end + 2 if end >= 0 else 0
    crlf = buf.rfind(b"\r\n\r\n")
    if crlf >= 0 and crlf + 4 > end:
        end = crlf + 4
    cr = buf.rfind(b"\r\r")
    if cr >= 0 and cr + 2 > end:
        end = cr + 2
    return end
