"""Pure-Python reference of the head scanners (``fastinfer._core.heads``).

Owns: ``plain_post``, which reads a client's request head when it has the plain shape of a data
request (an HTTP/1.1 ``POST`` whose every byte is in the strict subset below) and says nothing
(``None``) about any other head, which the caller then reads with llhttp as before;
``whole_response``, the same for an upstream's answer that came whole in one read;
``chunked_head``, the same for the head of a chunked answer (a stream), whose body ``ChunkedBody``
then reads read by read; ``answer_head``, which writes the head of an answer the gateway sends; and
``framed_chunk``, a relayed stream's chunk in the chunked framing. Same API and
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
a space and a reason of visible ASCII, spaces and tabs. A chunked answer's head may (must) have one
``Transfer-Encoding``, exactly ``chunked`` in any case (spaces and tabs around it aside), and no
``Content-Length``.

A chunked body (RFC 9112 7.1) in ``ChunkedBody``'s subset: a chunk-size line is hex digits (leading
zeros allowed), then either CR LF or ``;`` and an extension of visible ASCII, spaces and tabs up to
the CR LF (skipped); its data ends with CR LF; the last chunk (size 0) is followed by trailer lines
in the field subset (read and dropped) and the empty line. Anything else is an error, as llhttp
makes it one (a space after the size, a bare LF, a missing CR LF after the data); llhttp is
stricter only about what an extension holds, which this subset skips. The bytes of framing between
two pieces of data (a size line, an extension, the trailers) are bounded, so a line that never ends
fails while it is still arriving.

Must not touch: sockets, asyncio, what the fields mean beyond framing. Bytes in, plain values out.
"""
from __future__ import annotations

import time
from email.utils import formatdate

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
    return (target.decode("ascii"), Fields([(name.decode("ascii"), value.decode("ascii")) for name, value in fields]),
            content_length or 0, keep_alive)


_NO_DEFAULT = object()


class Fields:
    """A plain head's fields: a case-insensitive, read-only mapping of the names to their values,
    answering as a ``CIMultiDictProxy`` of the same fields (``get``, ``[]``, ``in``, ``getall``,
    ``items``...: the first field of a name for one value, every one in order for ``getall``); it
    equals a list of ``(name, value)`` pairs, or anything whose ``items()`` gives them (another
    ``Fields``, its twin's, a mapping), with the same pairs in order."""

    __hash__ = None

    def __init__(self, pairs: list[tuple[str, str]]):
        self._pairs = pairs

    def _values(self, key) -> list[str]:
        if not isinstance(key, str):
            raise TypeError("a field name must be a str")
        if not key.isascii():
            return []
        lowered = key.lower()
        return [value for name, value in self._pairs if name.lower() == lowered]

    def get(self, key, default=None):
        values = self._values(key)
        return values[0] if values else default

    def __getitem__(self, key):
        values = self._values(key)
        if not values:
            raise KeyError(key)
        return values[0]

    def __contains__(self, key) -> bool:
        return isinstance(key, str) and bool(self._values(key))

    def getall(self, key, default=_NO_DEFAULT):
        values = self._values(key)
        if values:
            return values
        if default is _NO_DEFAULT:
            raise KeyError(key)
        return default

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self):
        return iter(self.keys())

    def keys(self) -> list[str]:
        return [name for name, _ in self._pairs]

    def values(self) -> list[str]:
        return [value for _, value in self._pairs]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __eq__(self, other):
        if isinstance(other, (list, tuple)):
            return self.items() == list(other)
        items = getattr(other, "items", None)      # another Fields (its twin's too), a mapping
        return NotImplemented if items is None else self.items() == list(items())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.items()!r}>"


class AnswerFields(Fields):
    """An upstream answer head's fields: read as the dict of its lower-cased names to their values
    (the last of a repeated name winning), and equal to that dict."""

    def _as_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self._pairs}

    def get(self, key, default=None):
        values = self._values(key)
        return values[-1] if values else default

    def __getitem__(self, key):
        values = self._values(key)
        if not values:
            raise KeyError(key)
        return values[-1]

    def __len__(self) -> int:
        return len(self._as_dict())

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def keys(self) -> list[str]:
        return list(self._as_dict())

    def values(self) -> list[str]:
        return list(self._as_dict().values())

    def items(self) -> list[tuple[str, str]]:
        return list(self._as_dict().items())

    def __eq__(self, other):
        items = getattr(other, "items", None)       # a dict, another AnswerFields, its twin's
        return NotImplemented if items is None else self._as_dict() == dict(items())


def _read_fields(lines: list[bytes], chunked_ok: bool = False):
    """``(fields, content_length, keep_alive)`` of a head's field lines in the subset, else None;
    ``fields`` are ``(name, value)`` bytes, the spaces before a value left out, those after it kept
    (as llhttp reads them); ``content_length`` None without the field. ``chunked_ok``: one
    ``Transfer-Encoding: chunked`` is in the subset, and ``content_length`` is then -1 when it is there."""
    fields = []
    content_length = None
    keep_alive = None
    chunked = False
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or any(c not in TCHAR for c in name) or any(c not in VALUE for c in value):
            return None
        value = value.lstrip(OWS)
        lowered = name.lower()
        if lowered == b"transfer-encoding" and chunked_ok and not chunked and value.rstrip(OWS).lower() == b"chunked":
            chunked = True
            fields.append((name, value))
            continue
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
    if chunked:
        if content_length is not None:
            return None
        content_length = -1
    return fields, content_length, keep_alive is not False


def _response_head(data: bytes, chunked_ok: bool):
    """``(status, fields, body_start, content_length, keep_alive)`` of the answer head ``data`` starts
    with, in the subset (``content_length``: None without one, -1 chunked), else None."""
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
    read = _read_fields(lines[1:], chunked_ok)
    if read is None:
        return None
    pairs, content_length, keep_alive = read
    fields = AnswerFields([(name.decode("ascii"), value.rstrip(OWS).decode("ascii")) for name, value in pairs])
    return status, fields, end + 4, content_length, keep_alive


def chunked_head(data: bytes):
    """``(status, fields, body_start, keep_alive)`` when ``data`` starts with a whole answer head of
    the plain shape (as ``whole_response`` reads it) with ``Transfer-Encoding: chunked``: the body,
    from ``body_start`` on, is the caller's to read with a ``ChunkedBody``. ``None`` for anything
    else, which the caller then feeds to llhttp."""
    head = _response_head(data, chunked_ok=True)
    if head is None or head[3] != -1:
        return None
    status, fields, body_start, _, keep_alive = head
    return status, fields, body_start, keep_alive


def whole_response(data: bytes):
    """``(status, fields, body_start, keep_alive)`` when ``data`` is exactly one complete upstream
    answer of the plain shape: ``HTTP/1.1 <200-999, not 204 or 304> <reason>``, fields as above,
    and a body of exactly its ``Content-Length``;
    ``None`` for anything else, which the caller then feeds to llhttp. ``fields`` maps each
    lower-cased name to its value without the spaces around it (the last of a repeated name wins);
    ``Content-Length`` and ``Connection`` are read as in a request, the spaces after them kept."""
    head = _response_head(data, chunked_ok=False)
    if head is None:
        return None
    status, fields, body_start, content_length, keep_alive = head
    if content_length is None or len(data) - body_start != content_length:
        return None
    return status, fields, body_start, keep_alive


# ChunkedBody's states: where in the chunked framing the next byte is
SIZE, EXTENSION, SIZE_LF, DATA, DATA_CR, DATA_LF, TRAILER, TRAILER_NAME, TRAILER_VALUE, TRAILER_LF, LAST_LF, END = \
    range(12)
MAX_CHUNK_SIZE = 1 << 59     # far above any body; keeps the arithmetic in a signed 64-bit integer
HEX = b"0123456789abcdefABCDEF"


class ChunkedBody:
    """A chunked body, read by read: ``feed`` gives the data the read completes, ``done`` says the
    last chunk and its trailers have come, ``overflowed`` that bytes came after them (the connection
    is out of step: not to be reused). Framing outside the subset, or more than ``max_framing``
    bytes of it between two pieces of data, is a ``ValueError`` saying what was wrong; the body is
    then unusable."""

    def __init__(self, max_framing: int = 8192):
        self.max_framing = max_framing
        self.state = SIZE
        self.digits = 0          # hex digits of the size line so far
        self.size = 0            # the chunk's size; then what is left of its data
        self.framing = 0         # bytes of framing since the last data
        self.done = False
        self.overflowed = False

    def feed(self, data: bytes, start: int = 0) -> bytes:
        """The chunk data of ``data[start:]``, joined (``b""`` when it has none)."""
        if self.done:
            if start < len(data):
                self.overflowed = True
            return b""
        out = []
        i = start
        n = len(data)
        while i < n:
            state = self.state
            if state == DATA:
                take = min(self.size, n - i)
                out.append(data[i:i + take])
                i += take
                self.size -= take
                self.framing = 0
                if self.size == 0:
                    self.state = DATA_CR
                continue
            if state == END:
                self.overflowed = True
                break
            c = data[i]
            i += 1
            self.framing += 1
            if self.framing > self.max_framing:
                raise ValueError("overlong chunk-size line or trailer")
            self._step(c)
        self.done = self.state == END
        return b"".join(out)

    def _step(self, c: int) -> None:
        state = self.state
        if state == SIZE:
            if c in HEX:
                self.size = self.size * 16 + int(chr(c), 16)
                self.digits += 1
                if self.size >= MAX_CHUNK_SIZE:
                    raise ValueError("chunk size overflow")
            elif self.digits and c == 0x3B:      # ';'
                self.state = EXTENSION
            elif self.digits and c == 0x0D:
                self.state = SIZE_LF
            else:
                raise ValueError("invalid character in chunk size")
        elif state == EXTENSION:
            if c == 0x0D:
                self.state = SIZE_LF
            elif c not in VALUE:
                raise ValueError("invalid character in chunk extension")
        elif state == SIZE_LF:
            if c != 0x0A:
                raise ValueError("expected LF after chunk size")
            self.digits = 0
            self.state = DATA if self.size else TRAILER
        elif state in (DATA_CR, DATA_LF):
            if c != (0x0D if state == DATA_CR else 0x0A):
                raise ValueError("expected CR LF after chunk data")
            self.state = DATA_LF if state == DATA_CR else SIZE
        elif state == TRAILER:
            if c == 0x0D:
                self.state = LAST_LF
            elif c in TCHAR:
                self.state = TRAILER_NAME
            else:
                raise ValueError("invalid trailer")
        elif state == TRAILER_NAME:
            if c == 0x3A:                        # ':'
                self.state = TRAILER_VALUE
            elif c not in TCHAR:
                raise ValueError("invalid trailer")
        elif state == TRAILER_VALUE:
            if c == 0x0D:
                self.state = TRAILER_LF
            elif c not in VALUE:
                raise ValueError("invalid trailer")
        elif state in (TRAILER_LF, LAST_LF):
            if c != 0x0A:
                raise ValueError("expected LF after trailer")
            self.state = TRAILER if state == TRAILER_LF else END


_CONTROL = frozenset(range(0x20)) - {0x09} | {0x7F}


def answer_head(status_line: bytes, headers, tail: bytes, length: int, keep_alive: bool,
                names: tuple = (), values: tuple = (), dated: bool = False) -> bytes:
    """An HTTP/1.1 answer's head: ``status_line``; each of ``names`` (encoded, its ``": "``
    included; at most eight) with the value at the same index of ``values`` — a string (UTF-8),
    an int (its decimal) or a float below 1e20 in size (three decimals, as ``f"{value:.3f}"``);
    each of ``headers`` (a mapping or a multidict of strings, UTF-8 encoded) as ``name: value``;
    ``tail`` (fields ending in CR LF); when ``dated``, ``Date`` (now, as aiohttp writes it);
    ``Content-Length`` unless ``length`` is negative; ``Connection: close`` unless
    ``keep_alive``; the empty line. A control character other than tab in a name or value is a
    ``ValueError`` (header injection), as aiohttp refuses it."""
    if len(values) != len(names):
        raise ValueError("answer_head: one value per leading name")
    if len(names) > 8:
        raise ValueError("answer_head: at most 8 leading fields")
    out = [status_line]
    for name, value in zip(names, values):
        if not isinstance(name, bytes):
            raise TypeError(f"a leading field's name must be bytes, not {type(name).__name__}")
        if any(c in _CONTROL for c in name):
            raise ValueError("Forbidden control character in an answer's headers")
        out.append(name + _leading_value(value) + b"\r\n")
    for name, value in (headers.items() if headers else ()):
        out.append(_checked(name).encode() + b": " + _checked(value).encode() + b"\r\n")
    out.append(tail)
    if dated:
        out.append(b"Date: %s\r\n" % formatdate(int(time.time()), usegmt=True).encode())
    if length >= 0:
        out.append(b"Content-Length: %d\r\n" % length)
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _checked(text):
    if not isinstance(text, str):
        raise TypeError(f"a header's name and value must be strings, not {type(text).__name__}")
    if any(c in _CONTROL for c in text.encode()):
        raise ValueError("Forbidden control character in an answer's headers")
    return text


def _leading_value(value) -> bytes:
    if type(value) is str:
        return _checked(value).encode()
    if type(value) is int:
        if not -2**63 <= value < 2**63:
            raise OverflowError("a leading int does not fit in 64 bits")
        return b"%d" % value
    if type(value) is float:
        if not -1e20 < value < 1e20:
            raise ValueError("answer_head: a leading float is out of range")
        return f"{value:.3f}".encode()
    raise TypeError(f"a leading field's value must be a str, an int or a float, not {type(value).__name__}")


def framed_chunk(data: bytes, after: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (RFC 9112 7.1: its size in lowercase hex, CR LF, the
    data, CR LF), then ``after``."""
    return f"{len(data):x}".encode() + b"\r\n" + data + b"\r\n" + after


def chunk_size_line(size: int) -> bytes:
    """A chunk's size line (hex, CR LF) alone."""
    if size < 0:
        raise ValueError("a chunk's size cannot be negative")
    return f"{size:x}\r\n".encode()
