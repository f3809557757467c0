"""One upstream HTTP exchange over a replica's pooled keep-alive connections.

Owns: turning aiohttp's client outcomes into an ``UpstreamReply`` or a typed
``GatewayError`` (connect failure, timeout before the first byte). Knows
nothing of which replica or why: the caller passes the session and URL.
"""
from __future__ import annotations

import asyncio

import aiohttp

from ..errors import UpstreamFailure, UpstreamTimeout
from .base import UpstreamReply


async def post(session, url: str, headers: dict, body: bytes, stream: bool, timeouts) -> UpstreamReply:
    """POST ``body``; for a successful stream, hand back the live byte iterator.

    The response head must arrive within ``first_byte_s``; after it, a stream
    may go silent for at most ``idle_s`` between reads.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.first_byte_s)
    try:
        resp = await session.http.post(url, data=body, headers=headers, timeout=timeout)
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"upstream did not answer within {timeouts.first_byte_s:g}s") from None
    except aiohttp.ClientConnectorError as e:
        raise UpstreamFailure(f"cannot connect to upstream: {e.os_error.strerror or type(e.os_error).__name__}") from None
    except aiohttp.ClientError as e:
        raise UpstreamFailure(f"upstream connection failed: {type(e).__name__}") from None
    if stream and resp.status == 200:
        protocol = resp.connection.protocol if resp.connection is not None else None
        if protocol is not None:
            protocol.read_timeout = timeouts.idle_s
        return UpstreamReply.streaming(200, _chunks(resp, timeouts), resp.headers, release=resp.close)
    try:
        data = await resp.read()
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        resp.close()
        raise UpstreamTimeout(f"upstream did not finish its answer within {timeouts.first_byte_s:g}s") from None
    except aiohttp.ClientError as e:
        resp.close()
        raise UpstreamFailure(f"upstream connection failed: {type(e).__name__}") from None
    resp.release()
    return UpstreamReply.complete(resp.status, data, resp.headers)


async def _chunks(resp: aiohttp.ClientResponse, timeouts):
    """The raw stream; read errors become typed errors the relay can report in-stream."""
    content = resp.content
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            yield chunk
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"upstream stream idle for more than {timeouts.idle_s:g}s") from None
    except aiohttp.ClientPayloadError:
        raise UpstreamFailure("upstream cut the stream") from None
    except aiohttp.ClientError as e:
        raise UpstreamFailure(f"upstream stream failed: {type(e).__name__}") from None
    finally:
        resp.release()
