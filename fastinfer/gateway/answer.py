"""A whole (non-streamed) JSON answer written to the client in one send, its head built from bytes.

aiohttp's ``web.Response`` builds a header multidict, then ``prepare`` walks it to add
``Content-Length``, ``Date``, ``Server`` and ``Connection``, serializes it, and ``write_eof``
sends head and body: several coroutines and objects per answer. A data route's answer has
a known shape (a status, a few ``x-`` headers, a JSON body), so ``write_json`` writes the
same bytes aiohttp would — status line, the given headers, ``Content-Type``,
``Content-Length``, ``Date``, ``Server``, ``Connection: close`` when the connection ends — with
one ``str.join`` and one write, and hands aiohttp's connection a ``WrittenAnswer`` that only
says whether it stays open.

Owns: that write. Must not touch: what the headers say (the gateway decides), errors
(``errors.error_response``), streams (``app._RelayedResponse``).
"""
from __future__ import annotations

import re
from http import HTTPStatus

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

# what aiohttp's header serializer refuses (header injection): control characters but tab
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TAIL = f"Content-Type: application/json\r\nServer: {SERVER_SOFTWARE}\r\nDate: "
_status_lines: dict[int, str] = {}


def _status_line(status: int) -> str | None:
    line = _status_lines.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            return None        # a status aiohttp would have to name: it writes that answer
        line = _status_lines[status] = f"HTTP/1.1 {status} {reason}\r\n"
    return line


class WrittenAnswer:
    """What aiohttp's connection sees of an answer already written: nothing left to send, and
    whether the connection stays open (``finish_response`` reads only these)."""

    __slots__ = ("status", "keep_alive", "_writer")
    prepared = True

    def __init__(self, status: int, keep_alive: bool, writer):
        self.status = status
        self.keep_alive = keep_alive
        self._writer = writer

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        await self._writer.drain()     # as aiohttp's own write_eof: wait while the client reads slowly


def write_json(request: web.BaseRequest, status: int, headers: dict[str, str], body: bytes,
               keep_alive: bool) -> WrittenAnswer | None:
    """Write ``body`` with ``headers`` as the answer to ``request``; ``keep_alive`` False adds
    ``Connection: close``. ``None`` (nothing written) when aiohttp must write it instead: an
    HTTP/1.0 request (its keep-alive header), a status without a body or without a name."""
    if request.version != HttpVersion11 or status < 200 or status in (204, 304):
        return None
    line = _status_line(status)
    if line is None:
        return None
    if _FORBIDDEN.search("".join(headers) + "".join(headers.values())) is not None:
        raise ValueError("Forbidden control character in an answer's headers")   # as aiohttp refuses it
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    connection = "" if keep_alive else "Connection: close\r\n"
    head = f"{line}{fields}{_TAIL}{rfc822_formatted_time()}\r\nContent-Length: {len(body)}\r\n{connection}\r\n"
    writer = request.writer
    try:
        writer._writelines((head.encode(), body))   # the writer's own send: it counts output_size
    except ConnectionError:     # the client has gone: aiohttp drops the connection, as after its own write
        keep_alive = False
    return WrittenAnswer(status, keep_alive, writer)
