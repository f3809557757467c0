"""OpenAI and OpenAI-compatible upstreams (vLLM, SGLang, llama.cpp, Ollama, Azure OpenAI).

Owns: the request these upstreams expect (URL, auth header, upstream model id,
usage requested on streams). Also ``/v1/completions`` and ``/v1/embeddings``
(``req.endpoint``), passed through. Anthropic callers are translated by the
``Provider`` defaults (``formats``); streams are relayed by ``formats.openai``.
"""
from __future__ import annotations

import orjson

from ..transport.exchange import post
from .base import Provider
from ..transport import UpstreamReply


class OpenAIProvider(Provider):
    """``openai``, ``openai_compatible`` and ``azure_openai`` deployments."""

    endpoints = ("chat", "completions", "embeddings")
    _PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}

    def _url_and_headers(self, replica, credential: str | None, endpoint: str = "chat") -> tuple[str, dict]:
        headers = {"Content-Type": "application/json"}
        path = self._PATHS[endpoint]
        if self.deployment.provider == "azure_openai":
            url = (f"{replica.base_url}/openai/deployments/{self.deployment.upstream_model}"
                   f"/{path}?api-version={replica.api_version}")
            if credential:
                headers["api-key"] = credential
            return url, headers
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return f"{replica.base_url}/{path}", headers

    async def send(self, session, req, timeouts) -> UpstreamReply:
        body = self.upstream_body(req) if req.api != "openai" else {**req.body, "model": self.deployment.upstream_model}
        stream = req.stream
        if stream:
            # always ask for usage: accounting needs it even when the client did not
            options = body.get("stream_options")
            body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        url, headers = self._url_and_headers(session.replica, session.credential, req.endpoint)
        return await post(session.pool, url, headers, orjson.dumps(body), stream, timeouts)
