"""Google Gemini upstreams through the AI Studio API (``provider = "gemini"``).

Owns: the request Gemini expects: ``{base_url}/models/{model}:generateContent``
or ``:streamGenerateContent?alt=sse``, the key in ``x-goog-api-key``. Bodies,
replies and streams are translated by the ``Provider`` defaults (``translate``).
Must not touch: routing, retries, admission, the client connection.
"""
from __future__ import annotations

import orjson

from ..transport import UpstreamReply
from .base import Provider
from ..transport.exchange import post


class GeminiProvider(Provider):
    wire = "gemini"

    async def send(self, session, req, timeouts) -> UpstreamReply:
        headers = {"Content-Type": "application/json"}
        if session.credential:
            headers["x-goog-api-key"] = session.credential
        model = self.deployment.upstream_model.removeprefix("models/")
        action = "streamGenerateContent?alt=sse" if req.stream else "generateContent"
        url = f"{session.replica.base_url}/models/{model}:{action}"
        return await post(session.pool, url, headers, orjson.dumps(self.upstream_body(req)), req.stream, timeouts)
