"""Pure-Python reference of the head scanners (``fastinfer._core.heads``).

Owns: ``plain_post``, which reads a client's request head when it has the plain shape of a data
request (an HTTP/1.1 ``POST`` whose every byte is in the strict subset below) and says nothing
(``None``) about any other head, which the caller then reads with llhttp as before;
``whole_response``, the same for an upstream's answer that came whole in one read; and
``answer_head``, which writes the head of an answer the gateway sends. Same API and
behaviour as the compiled module; written to be slow and obvious, because it is the oracle the
tests compare the compiled scanner against.

The subset, chosen so that every head it accepts is one llhttp accepts and reads the same way:

* the request line is ``POST <target> HTTP/1.1`` with single spaces, the target a ``/`` followed by
  letters, digits and ``/ _ . -`` only (the data routes' paths; anything else is not one of them);
* every field line is ``<token>:<value>`` with CR LF: the name made of RFC 9110 ``tchar``, no space
  before the colon, the value visible ASCII, spaces and tabs (no obs-text, no control character),
  the spaces and tabs before it not part of it (those after it are, as llhttp reads them);
* ``Content-Length`` appears at most once, 1 to 18 digits; ``Connection`` at most once, exactly
  ``keep-alive`` or ``close`` (any case); no ``Transfer-Encoding``, ``Content-Encoding``, ``Expect``
  or ``Upgrade`` (what the data path leaves to aiohttp).

An answer's subset is the same for its fields; its status line is ``HTTP/1.1``, a three-digit code,
a space and a reason of visible ASCII, spaces and tabs.

Must not touch: sockets, asyncio, what the fields mean beyond framing. Bytes in, plain values out.
"""
from __future__ import annotations

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
TARGET = frozenset(b"/_.-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
VALUE = frozenset(range(0x20, 0x7F)) | {0x09}
OWS = b" \t"
#: fields whose presence leaves the request to the general path (llhttp, then aiohttp)
NOT_PLAIN = frozenset((b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"))
MAX_LENGTH_DIGITS = 18


def plain_post(buffer: bytes, head_length: int):
    """``(path, fields, content_length, keep_alive)`` of the head ``buffer[:head_length]`` (which
    ends with its empty line) when it has the plain shape; ``None`` when it has not. ``fields`` is a
    list of ``(name, value)`` strings in order; ``content_length`` is 0 without the field."""
    if head_length > len(buffer):
        return None
    head = buffer[:head_length]
    if len(head) < 4 or not head.endswith(b"\r\n\r\n"):
        return None
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    if not (request_line.startswith(b"POST /") and request_line.endswith(b" HTTP/1.1")):
        return None
    target = request_line[5:-9]
    if not target or any(c not in TARGET for c in target):
        return None
    read = _read_fields(lines[1:])
    if read is None:
        return None
    fields, content_length, keep_alive = read
    return (target.decode("ascii"), [(name.decode("ascii"), value.decode("ascii")) for name, value in fields],
            content_length or 0, keep_alive)


def _read_fields(lines: list[bytes]):
    """``(fields, content_length, keep_alive)`` of a head's field lines in the subset, else None;
    ``fields`` are ``(name, value)`` bytes, the spaces before a value left out, those after it kept
    (as llhttp reads them); ``content_length`` None without the field."""
    fields = []
    content_length = None
    keep_alive = None
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or any(c not in TCHAR for c in name) or any(c not in VALUE for c in value):
            return None
        value = value.lstrip(OWS)
        lowered = name.lower()
        if lowered in NOT_PLAIN:
            return None
        if lowered == b"content-length":
            if content_length is not None or not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return None
            content_length = int(value)
        elif lowered == b"connection":
            token = value.lower()
            if keep_alive is not None or token not in (b"keep-alive", b"close"):
                return None
            keep_alive = token == b"keep-alive"
        fields.append((name, value))
    return fields, content_length, keep_alive is not False


def whole_response(data: bytes):
    """``(status, fields, body_start, keep_alive)`` when ``data`` is exactly one complete upstream
    answer of the plain shape: ``HTTP/1.1 <200-999, not 204 or 304> <reason>``, fields as above,
    and a body of exactly its ``Content-Length``;
    ``None`` for anything else, which the caller then feeds to llhttp. ``fields`` maps each
    lower-cased name to its value without the spaces around it (the last of a repeated name wins);
    ``Content-Length`` and ``Connection`` are read as in a request, the spaces after them kept."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    status_line = lines[0]
    code = status_line[9:12]
    if (not status_line.startswith(b"HTTP/1.1 ") or len(code) != 3 or not code.isdigit()
            or status_line[12:13] != b" " or any(c not in VALUE for c in status_line[13:])):
        return None
    status = int(code)
    if status < 200 or status in (204, 304):
        return None
    read = _read_fields(lines[1:])
    if read is None:
        return None
    pairs, content_length, keep_alive = read
    fields = {name.lower().decode("ascii"): value.rstrip(OWS).decode("ascii") for name, value in pairs}
    body_start = end + 4
    if content_length is None or len(data) - body_start != content_length:
        return None
    return status, fields, body_start, keep_alive


_CONTROL = frozenset(range(0x20)) - {0x09} | {0x7F}


def answer_head(status_line: bytes, headers, tail: bytes, length: int, keep_alive: bool) -> bytes:
    """An HTTP/1.1 answer's head: ``status_line``, each of ``headers`` (a mapping or a multidict of
    strings, UTF-8 encoded) as ``name: value``, ``tail`` (fields ending in CR LF), ``Content-Length``
    unless ``length`` is negative, ``Connection: close`` unless ``keep_alive``, and the empty line.
    A control character other than tab in a name or value is a ``ValueError`` (header injection),
    as aiohttp refuses it."""
    out = [status_line]
    for name, value in headers.items():
        for text in (name, value):
            if not isinstance(text, str):
                raise TypeError(f"a header's name and value must be strings, not {type(text).__name__}")
            if any(c in _CONTROL for c in text.encode()):
                raise ValueError("Forbidden control character in an answer's headers")
        out.append(name.encode() + b": " + value.encode() + b"\r\n")
    out.append(tail)
    if length >= 0:
        out.append(b"Content-Length: %d\r\n" % length)
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)
