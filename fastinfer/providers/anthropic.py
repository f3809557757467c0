"""Anthropic Messages upstreams (``provider = "anthropic"``).

Owns: the request Anthropic expects: ``{base_url}/messages``, ``x-api-key``,
``anthropic-version: 2023-06-01``, the upstream model id, and a ``max_tokens``
(required there; the deployment's ``default_max_tokens`` when the caller gave
none). Bodies, replies and streams are translated by the ``Provider``
defaults (``translate``); Anthropic callers get the upstream's stream as bytes.
Must not touch: routing, retries, admission, the client connection.
"""
from __future__ import annotations

import orjson

from ..transport import UpstreamReply
from .base import Provider
from ..transport.exchange import post

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    wire = "anthropic"

    async def send(self, session, req, timeouts) -> UpstreamReply:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if session.credential:
            headers["x-api-key"] = session.credential
        body = orjson.dumps(self.upstream_body(req))
        return await post(session.pool, f"{session.replica.base_url}/messages", headers, body, req.stream, timeouts)
