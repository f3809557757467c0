"""Answers the gateway writes itself, their heads built from bytes: a whole (non-streamed) JSON
answer in one send, and a relayed stream's head with its first bytes.

aiohttp's ``web.Response`` builds a header multidict, then ``prepare`` walks it to add
``Content-Length``, ``Date``, ``Server`` and ``Connection``, serializes it, and ``write_eof``
sends head and body: several coroutines and objects per answer. A data route's answer has
a known shape (a status, a few ``x-`` headers, a JSON body), so ``write_json`` writes the
same bytes aiohttp would — status line, the given headers, ``Content-Type``,
``Content-Length``, ``Date``, ``Server``, ``Connection: close`` when the connection ends — in
one compiled pass (``_core.heads.answer_head``) and one write, and hands aiohttp's connection a
``WrittenAnswer`` that only says whether it stays open.

A relayed stream's head (``stream_head``) is built the same way, with ``Transfer-Encoding:
chunked``, and the compiled ``_core.client.ClientStream`` sends it with the stream's first bytes and
ends the stream with its last chunk, so a stream costs no ``StreamResponse``, ``prepare`` or
``write_eof``.

Owns: those writes. Must not touch: what the headers say (the gateway decides), errors
(``errors.error_response``), what a stream carries (the engine's relay).
"""
from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

from .._core.client import DirectRequest
from .._core.heads import answer_head
from .._core.slotted import record_maker

_SERVER_TAIL = f"Server: {SERVER_SOFTWARE}\r\n".encode()     # and the Date, written by ``answer_head``
_JSON_TAIL = b"Content-Type: application/json\r\n" + _SERVER_TAIL
_STREAM_TAIL = (b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                + _SERVER_TAIL)


class _StatusLines(dict):
    """status -> its status line, made at its first use (a lookup after, no call)."""

    def __missing__(self, status: int) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""        # as aiohttp writes a status it cannot name
        line = self[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
        return line


_STATUS_LINES = _StatusLines()


@dataclass(slots=True, eq=False)     # compared and hashed by identity, as a plain class is
class WrittenAnswer:
    """What aiohttp's connection sees of an answer already written: nothing left to send, and
    whether the connection stays open (``finish_response`` reads only these)."""

    status: int
    keep_alive: bool
    _writer: Any
    # a slot, not a class attribute: 3.11 specializes a slot's read on every answer, never a class
    # attribute's through an instance without a __dict__
    prepared: bool = True

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        await self._writer.drain()     # as aiohttp's own write_eof: wait while the client reads slowly

    def force_close(self) -> None:
        """The connection ends after this answer (as ``StreamResponse.force_close``)."""
        self.keep_alive = False


# ``WrittenAnswer(status, keep_alive, writer)`` on every whole answer, without the dataclass's
# ``__init__``: a Python class's call 3.11 leaves unspecialized, and a frame (``_core.slotted``)
new_written_answer = record_maker(WrittenAnswer)


def _aiohttp_writes(request: web.BaseRequest, status: int) -> bool:
    """Whether aiohttp must write this answer's head: for an HTTP/1.0 request (its keep-alive
    header), or a status without a body. (Inlined where it is asked on every answer.) A request of
    the direct path is HTTP/1.1, always (``_core.client`` takes no other): its ``version``, a class
    attribute of a compiled class, is a generic read and a tuple comparison not made for it."""
    return ((type(request) is not DirectRequest and request.version != HttpVersion11)
            or status < 200 or status in (204, 304))


def _head_bytes(status: int, headers, tail: bytes, length: int | None, keep_alive: bool) -> bytes:
    """An HTTP/1.1 head: the status line, ``headers`` (a mapping or a multidict), ``tail`` (encoded
    fields), the date, ``Content-Length`` unless ``length`` is None, ``Connection``. A control
    character in a field is a ``ValueError``, as aiohttp refuses it (header injection). The date is
    aiohttp's (``int(time.time())``'s second), made by ``answer_head`` once a second."""
    return answer_head(_STATUS_LINES[status], headers, tail, -1 if length is None else length, keep_alive,
                       (), (), True)


def leading_headers(names: tuple, values: tuple, headers, fields: bytes = b"") -> dict[str, str]:
    """The leading fields (``write_json``), ``headers`` and the encoded ``fields`` as one dict of
    strings, for an answer aiohttp writes (``_aiohttp_writes``): the values as ``answer_head``
    writes them."""
    out = {name[:-2].decode(): value if type(value) is str else f"{value:.3f}" if type(value) is float
           else str(value) for name, value in zip(names, values)}
    out.update(headers)
    for line in fields.decode().split("\r\n")[:-1]:
        name, _, value = line.partition(": ")
        out[name] = value
    return out


def written_response(response: web.Response, keep_alive: bool) -> tuple[bytes, bytes]:
    """An aiohttp ``Response`` not yet sent (an error's) as the bytes of an HTTP/1.1 answer: what
    aiohttp's ``prepare`` and ``write_eof`` would send, for a connection that writes its own."""
    status = response.status
    headers = response.headers
    if "Content-Length" in headers:
        headers = headers.copy()
        del headers["Content-Length"]
    if status < 200 or status in (204, 304):
        return _head_bytes(status, headers, _SERVER_TAIL, None, keep_alive), b""
    body = response.body or b""
    return _head_bytes(status, headers, _SERVER_TAIL, len(body), keep_alive), body


def write_json(request: web.BaseRequest, status: int, headers: dict[str, str], body: bytes,
               keep_alive: bool, names: tuple = (), values: tuple = (), fields: bytes = b"") -> WrittenAnswer | None:
    """Write ``body`` with ``headers`` as the answer to ``request``, after the leading fields
    ``names`` (encoded, with their ``": "``) and ``values`` (strings, ints, floats written with
    three decimals: ``_core.heads.answer_head``), which ``headers`` must not repeat, and before
    ``fields`` (encoded, each ending in CR LF: made by the core, as the rate limits'); ``keep_alive``
    False adds ``Connection: close``. ``None`` (nothing written) when aiohttp must write it instead
    (``_aiohttp_writes``; ``leading_headers`` makes its headers)."""
    if ((type(request) is not DirectRequest and request.version != HttpVersion11)      # _aiohttp_writes
            or status < 200 or status in (204, 304)):
        return None
    head = answer_head(_STATUS_LINES[status], headers, fields + _JSON_TAIL if fields else _JSON_TAIL, len(body),
                       keep_alive, names, values, True)
    writer = request.writer
    try:
        writer._writelines((head, body))   # the writer's own send: it counts output_size
    except ConnectionError:     # the client has gone: aiohttp drops the connection, as after its own write
        keep_alive = False
    return new_written_answer(status, keep_alive, writer)


def stream_head(request: web.BaseRequest, status: int, headers: dict[str, str], keep_alive: bool,
                names: tuple = (), values: tuple = (), fields: bytes = b"") -> bytes | None:
    """The head of a relayed event stream (chunked), to go out with its first bytes, its leading
    fields and ``fields`` as ``write_json``'s; ``None`` when aiohttp must write it (``_aiohttp_writes``)."""
    if _aiohttp_writes(request, status):
        return None
    return answer_head(_STATUS_LINES[status], headers, fields + _STREAM_TAIL if fields else _STREAM_TAIL, -1,
                       keep_alive, names, values, True)

