"""Reading a client's JSON body: the limits that hold before anything parses or translates it.

Owns: the body-size limit (413, from ``Content-Length`` before a byte is read and
again on what arrived, after any ``Content-Encoding`` is decoded), the body timeout
(408), an undecodable ``gzip``/``deflate`` body (400), the JSON parse (400), and the
nesting limit ``MAX_JSON_DEPTH`` (400). Must not touch: what the body means (the API
modules check its fields), the engine.

Why a depth limit: orjson parses 1,024 levels but encodes only 255, and translators
recurse into JSON schemas. A body nested deeper than any real request (tool schemas
run to a dozen levels) is refused here, well below both, so that no later stage can
fail on it.
"""
from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from .._core.bodies import json_depth_exceeds
from ..errors import BadRequest, BodyNotRead, BodyTooLarge

MAX_JSON_DEPTH = 64


#: ``arrived_json``'s answer for a body still arriving
NOT_ARRIVED = object()


def arrived_json(request: web.Request, max_bytes: int):
    """The request's body parsed, when all of it has arrived (a small body nearly always comes with
    its head), else ``NOT_ARRIVED``: then ``read_json`` waits for it. Not a coroutine: a coroutine
    costs every request, and this one awaits nothing. ``GatewayError`` (413, 400) as ``read_json``."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(f"Request body of {length} bytes exceeds the limit of {max_bytes} bytes.")
    content = request.content
    if not content.is_eof():
        return NOT_ARRIVED
    # taken as it lies, without a timer to arm or a read loop to await; its decoded size checked before the join
    if content.total_bytes > max_bytes:
        raise BodyTooLarge(f"Request body exceeds the limit of {max_bytes} bytes.")
    try:
        raw = content.read_nowait()
    except web.RequestPayloadError as e:
        raise _undecodable(request, e) from None
    return _parsed(raw, max_bytes)


async def read_json(request: web.Request, max_bytes: int, timeout_s: float):
    """The request's body, parsed; ``GatewayError`` (413, 408, 400) when it breaks a limit."""
    body = arrived_json(request, max_bytes)
    if body is not NOT_ARRIVED:
        return body
    try:
        # the data routes' own connection (``_core.client.RequestBody``) waits on a timer of its own
        read_within = getattr(request.content, "read_within", None)
        if read_within is not None:
            raw = await read_within(timeout_s)
        else:
            async with asyncio.timeout(timeout_s):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"Request body exceeds the limit of {max_bytes} bytes.") from None
    except TimeoutError:
        raise BodyNotRead("The request body did not arrive in time.", status=408, code="request_timeout") from None
    except web.RequestPayloadError as e:   # e.g. a Content-Encoding: gzip body that is not gzip
        raise _undecodable(request, e) from None
    return _parsed(raw, max_bytes)


def _parsed(raw: bytes, max_bytes: int):
    """``raw`` as JSON within the size and depth limits."""
    if len(raw) > max_bytes:
        raise BodyTooLarge(f"Request body exceeds the limit of {max_bytes} bytes.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"The request body is not valid JSON: {e}") from None
    if json_depth_exceeds(raw, MAX_JSON_DEPTH):
        raise BadRequest(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.")
    return body


def _undecodable(request: web.Request, error: Exception) -> BodyNotRead:
    # aiohttp's parser stopped at the error: nothing more of the body comes. Marked ended, or the read
    # aiohttp makes of an unread body after the answer raises the same error again, a traceback in the log
    request.content.feed_eof()
    return BodyNotRead(f"The request body could not be decoded: {_first_line(error)}")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1].strip() or type(error).__name__
