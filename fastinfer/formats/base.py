"""What a stream relay offers the engine, and the SSE event splitting every passthrough relay shares."""
from __future__ import annotations


class StreamRelay:
    """Turns upstream stream bytes into the caller's stream bytes, chunk by chunk.

    ``feed`` returns what may be written to the client now (only whole events,
    so an error event can always be appended cleanly); ``finished`` tells if
    the upstream ended the stream properly; ``usage`` is the upstream's count,
    normalized (``translate.common``), or an estimate flagged ``usage_estimated``
    when the upstream sent none.
    """

    finished: bool = False
    usage: dict | None = None
    error: bytes | None = None    # an error event the upstream sent in-stream
    failure = None                # a GatewayError: the upstream stream became unusable (garbage)

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def error_event(self, err) -> bytes:
        """The caller-format event that ends a stream which failed after its first byte."""
        raise NotImplementedError


def whole_events(carry: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """Split what has arrived into (the whole SSE events, the partial one to carry to the next read).

    Relays forward only whole events, so that an error event can always be appended cleanly.
    """
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
