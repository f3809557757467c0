"""OpenAI and OpenAI-compatible upstreams (vLLM, SGLang, llama.cpp, Ollama, Azure OpenAI).

Owns: the request these upstreams expect (URL, auth header, upstream model id,
usage requested on streams) and relaying their SSE streams to OpenAI clients
as bytes, touching only what the gateway must: it drops the usage-only chunk
the gateway asked for on the client's behalf, and forwards only whole events.
"""
from __future__ import annotations

import orjson

from .._core.sse import SSEParser, encode_data
from .base import Provider, StreamRelay, UpstreamReply
from .http import post

_USAGE_KEY = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')


class OpenAIProvider(Provider):
    """``openai``, ``openai_compatible`` and ``azure_openai`` deployments."""

    def _url_and_headers(self, replica, credential: str | None) -> tuple[str, dict]:
        headers = {"Content-Type": "application/json"}
        if self.deployment.provider == "azure_openai":
            url = (f"{replica.base_url}/openai/deployments/{self.deployment.upstream_model}"
                   f"/chat/completions?api-version={replica.api_version}")
            if credential:
                headers["api-key"] = credential
            return url, headers
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return f"{replica.base_url}/chat/completions", headers

    async def send(self, session, req, timeouts) -> UpstreamReply:
        body = dict(req.body)
        stream = req.stream
        body["model"] = self.deployment.upstream_model
        if stream:
            # always ask for usage: accounting needs it even when the client did not
            options = body.get("stream_options")
            body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        url, headers = self._url_and_headers(session.replica, session.credential)
        return await post(session, url, headers, orjson.dumps(body), stream, timeouts)

    def stream_relay(self, req) -> StreamRelay:
        return OpenAIStreamRelay(req.client_wants_usage)


def _last_event_end(buf: bytes) -> int:
    """Offset just past the last complete SSE event in ``buf`` (0 if none)."""
    if buf.endswith(b"\n\n"):
        return len(buf)
    end = buf.rfind(b"\n\n")
    end = end + 2 if end >= 0 else 0
    crlf = buf.rfind(b"\r\n\r\n")
    if crlf >= 0 and crlf + 4 > end:
        end = crlf + 4
    cr = buf.rfind(b"\r\r")
    if cr >= 0 and cr + 2 > end:
        end = cr + 2
    return end


def _needs_attention(events: bytes) -> bool:
    """Could these whole events hold the end marker, a usage object or an error?

    A few C-speed substring scans: ``out`` always ends on an event boundary, so
    the parser holds no partial state when a chunk skips it.
    """
    return (b"[DONE]" in events or b'"usage":{' in events or b'"usage": {' in events
            or b'"error"' in events)


class OpenAIStreamRelay(StreamRelay):
    """OpenAI upstream stream -> OpenAI client stream, as bytes."""

    __slots__ = ("_parser", "_carry", "_client_wants_usage", "finished", "usage", "error")

    def __init__(self, client_wants_usage: bool):
        self._parser = SSEParser()
        self._carry = b""
        self._client_wants_usage = client_wants_usage
        self.finished = False
        self.usage = None
        self.error = None

    def feed(self, chunk: bytes) -> bytes:
        buf = self._carry + chunk if self._carry else chunk
        end = _last_event_end(buf)
        if end == 0:
            self._carry = buf
            return b""
        if end == len(buf):
            out, self._carry = buf, b""
        else:
            out, self._carry = buf[:end], buf[end:]
        if not _needs_attention(out):
            return out  # the common token chunk: forwarded untouched, never parsed
        events = self._parser.feed(out)
        drop = None
        for i, event in enumerate(events):
            data = event.data
            if data == b"[DONE]":
                self.finished = True
            elif _USAGE_KEY in data and not any(n in data for n in _NULL_USAGE):
                frame = orjson.loads(data)
                self.usage = frame.get("usage")
                if not self._client_wants_usage and not frame.get("choices"):
                    drop = i
            elif data.startswith(b'{"error"'):
                self.error = data
        if drop is None:
            return out
        return b"".join(encode_data(e.data) for j, e in enumerate(events) if j != drop)

    def error_event(self, err) -> bytes:
        return encode_data(orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}}))
