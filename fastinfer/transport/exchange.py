"""One upstream HTTP exchange on a keep-alive pool.

Owns: sending a framed request on a kept-alive connection (or a new one, and once more on a new one
when the kept-alive one was stale) and waiting for the answer its ``Exchange`` sink says is there (a
whole body, or for a 200 stream its first bytes and the live rest, handed on by callback). Knows
nothing of which replica or why: the caller passes the pool and URL.
"""
from __future__ import annotations

import asyncio

from ..errors import UpstreamFailure
from .h1 import build_request
from .pool import Pool
from .reply import UpstreamReply


def request(pool: Pool, method: str, url: str, headers: dict, body: bytes, stream: bool, timeouts):
    """One exchange of any method, its head built for this call: the control calls' way (health probes,
    backend sessions). The data path keeps its heads (``Provider``) and calls ``exchange``."""
    return exchange(pool, build_request(method, pool.path_of(url), pool.host_header, headers, body), stream,
                    timeouts)


async def exchange(pool: Pool, framed: bytes, stream: bool, timeouts) -> UpstreamReply:
    """Send ``framed`` (a whole request: ``h1.build_request``, or ``h1.framed`` with a head the
    caller keeps) on one of ``pool``'s connections: a whole reply, or for a 200 stream its first bytes
    and the live rest."""
    take = pool.kept_alive      # a callable kept on the pool: ``pool.kept_alive()`` is a read 3.11 cannot specialize
    conn = take()
    while True:
        if conn is None:
            conn = await pool.connect(timeouts.connect_s)
        sink = conn.exchange(framed, stream, timeouts)
        try:
            reply = await sink.ready
            break
        except UpstreamFailure:
            # a kept-alive connection the upstream closed as we reused it: once more, on a new one
            # (another kept-alive one may be as stale; a new one is never ``reused``, so once)
            if conn.reused and not conn.got_bytes:
                conn = None
                continue
            raise
        except asyncio.CancelledError:
            sink.close()
            raise
    if reply is None:       # not a whole answer in one read (``on_whole``): what the sink gathered
        reply = sink.reply()
    return reply
