"""The OpenAI wire format: Chat Completions (the pivot), and ``/v1/completions`` and
``/v1/embeddings`` passed through. Upstreams: OpenAI and OpenAI-compatible servers
(vLLM, SGLang, llama.cpp, Ollama, Azure OpenAI).

Owns: ``OPENAI``, the ``Format`` (the request asks for usage on every stream,
since accounting needs it even when the client did not; the OpenAI error body,
built here and nowhere else), and ``OpenAIStreamRelay``, which relays an OpenAI
stream to an OpenAI client as bytes, touching only what the gateway must: it
drops the usage-only chunk the gateway asked for on the client's behalf, and
forwards only whole events (read by the compiled ``_core.relay``). Compatible
servers' quirks are tolerated: no usage chunk, or one that is not an object
(usage is then estimated), ``reasoning_content`` deltas, missing ``created``.
Must not touch: HTTP, the engine.
"""
from __future__ import annotations

import orjson

from .._core.bodies import openai_reply_usage
from .._core.relay import OpenAIPassthrough
from .._core.sse import encode_data
from ..errors import GatewayError, UpstreamFailure
from .base import NOT_AN_OBJECT, Format
from .common import json_object, params_without_place, text_of, usage_from_openai
from .relay import StreamRelay


class OpenAIStreamRelay(OpenAIPassthrough, StreamRelay):
    """OpenAI upstream stream -> OpenAI client stream, as bytes: read by the compiled
    ``_core.relay.OpenAIPassthrough`` (what goes out, the end, the usage, normalized or estimated
    when the server sent none, an error, garbage); this adds what only a format knows, its error event.
    ``OpenAIStreamRelay(client_wants_usage, request_body)``: the request's body is what an estimate
    counts the prompt of."""

    __slots__ = ()

    def error_event(self, err) -> bytes:
        return OPENAI.error_event(err)


def _ask_for_usage(body: dict) -> None:
    """A stream's upstream body always asks for usage: accounting needs it even when the client did not."""
    options = body.get("stream_options")
    body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}


class OpenAIFormat(Format):
    name = "openai"
    endpoints = ("chat", "completions", "embeddings")

    def request_to_pivot(self, body: dict, model: str) -> dict:
        return {**body, "model": model}

    def upstream_body(self, req, caller: Format, deployment) -> dict:
        """``Format.upstream_body``; an OpenAI caller's body (nearly every request) is the upstream's
        with its model and, for a stream, its usage asked for, made here: two calls less a request. A
        count (an Anthropic caller's ``count_tokens``) is vLLM's ``/tokenize`` of the chat request: its
        model, messages and tools, rendered with the chat template as a generation would be."""
        if caller is not self:
            body = Format.upstream_body(self, req, caller, deployment)
            if req.endpoint != "count_tokens":
                return body
            return {"model": body["model"], "messages": body["messages"], "add_generation_prompt": True,
                    **({"tools": body["tools"]} if body.get("tools") else {})}
        body = {**req.body, "model": deployment.upstream_model}
        if req.stream:
            _ask_for_usage(body)
        return body

    def request_from_pivot(self, body: dict, deployment, stream: bool) -> dict:
        if not deployment.takes_every_param:    # OpenAI's own API (and Azure's); vLLM, SGLang... take ``top_k``
            params_without_place(body, ("top_k",), "speaks OpenAI's own API", deployment.drop_params)
        if stream:
            _ask_for_usage(body)
        return body

    def reply(self, body: bytes, req, caller: Format, model: str) -> tuple[bytes, dict]:
        """``Format.reply``; to an OpenAI caller (nearly every reply) the body goes as it came, its
        usage read in one compiled call (``openai_reply_usage``: parse, check, normalize)."""
        if caller is not self:
            return Format.reply(self, body, req, caller, model)
        try:
            usage = openai_reply_usage(body)
        except ValueError:
            raise UpstreamFailure(NOT_AN_OBJECT) from None
        if usage is None:       # no usage (a compatible server's quirk): estimated from the reply's text
            usage = self._usage(json_object(body), req)
        return body, usage

    def counted(self, reply: dict):
        return reply.get("count")       # vLLM's /tokenize: {"count", "max_model_len", "tokens"}

    def reply_to_pivot(self, reply: dict, model: str, req) -> dict:
        return reply

    def reply_from_pivot(self, reply: dict, usage: dict) -> dict:
        return reply

    def reply_usage(self, reply: dict) -> dict | None:
        return usage_from_openai(reply.get("usage"))

    def reply_text(self, reply: dict) -> str:
        return "".join(text_of((c.get("message") or {}).get("content")) or c.get("text") or ""
                       for c in reply.get("choices") or ())

    def stream_to_pivot(self, model: str, include_usage: bool, estimate, req):
        return None

    def stream_from_pivot(self, model: str, estimate):
        return None

    def relay(self, req, caller: Format, model: str) -> StreamRelay:
        """``Format.relay``; to an OpenAI caller (nearly every stream) the passthrough, made here: a
        call less a stream."""
        if caller is self:
            return OpenAIStreamRelay(req.client_wants_usage, req.body)
        return Format.relay(self, req, caller, model)

    def passthrough_relay(self, req) -> StreamRelay:
        return OpenAIStreamRelay(req.client_wants_usage, req.body)

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"error": {"message": err.message, "type": _OPENAI_TYPE.get(err.type, err.type),
                                       "code": err.code, "param": err.param}})

    def error_event(self, err: GatewayError) -> bytes:
        return encode_data(self.error_body(err))


#: Anthropic's error types OpenAI's API has no type for (an upstream's 404 or 413 is classified in
#: Anthropic's words): OpenAI calls both ``invalid_request_error``, the code says which
_OPENAI_TYPE = {"not_found_error": "invalid_request_error", "request_too_large": "invalid_request_error"}

OPENAI = OpenAIFormat()
