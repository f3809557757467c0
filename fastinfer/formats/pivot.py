"""Which translation a (upstream wire format, caller API) pair takes.

Owns: picking and composing the pure translators for requests, whole replies,
usage and stream relays. OpenAI chat is the pivot: an Anthropic caller on a
Gemini upstream goes Anthropic -> OpenAI -> Gemini and back.
Must not touch: translation rules themselves, I/O, the engine.
"""
from __future__ import annotations

import orjson

from ..errors import UpstreamFailure
from .anthropic import (AnthropicToOpenAIStream, OpenAIToAnthropicStream, anthropic_to_openai_reply,
                        anthropic_to_openai_request, openai_to_anthropic_reply, openai_to_anthropic_request)
from .common import (estimate_tokens, estimated_usage, json_object, make_usage, prompt_chars, text_of, usage_from_anthropic,
                     usage_from_gemini, usage_from_openai)
from .gemini import GeminiToOpenAIStream, gemini_to_openai_reply, openai_to_gemini_request
from .relay import AnthropicStreamRelay, TranslatingRelay


def translate_request(wire: str, req, deployment) -> dict:
    """The caller's body as the upstream's body (model set, ``max_tokens`` defaulted for Anthropic)."""
    body, api, model = req.body, req.api, deployment.upstream_model
    if wire == "anthropic":
        if api == "anthropic":
            out = {**body, "model": model}
            out.setdefault("max_tokens", deployment.default_max_tokens)
            return out
        return openai_to_anthropic_request(body, model, deployment.default_max_tokens)
    openai_body = anthropic_to_openai_request(body, model) if api == "anthropic" else {**body, "model": model}
    if wire == "gemini":
        return openai_to_gemini_request(openai_body)
    return openai_body


def _loads(body: bytes) -> dict:
    reply = json_object(body)
    if reply is None:
        raise UpstreamFailure("upstream sent a reply that is not a JSON object")
    return reply


def _openai_reply(wire: str, reply: dict, model: str) -> dict:
    if wire == "anthropic":
        return anthropic_to_openai_reply(reply)
    if wire == "gemini":
        return gemini_to_openai_reply(reply, model)
    return reply


def convert_reply(wire: str, body: bytes, req, model: str) -> bytes:
    """A successful whole upstream reply in the caller's format."""
    reply = _loads(body)
    if req.api == "anthropic":
        if wire == "anthropic":
            return body
        openai_reply = _openai_reply(wire, reply, model)
        return orjson.dumps(openai_to_anthropic_reply(openai_reply, _usage_of(wire, reply, req)))
    return orjson.dumps(_openai_reply(wire, reply, model))


_USAGE = {
    "openai": lambda r: usage_from_openai(r.get("usage")),
    "anthropic": lambda r: usage_from_anthropic(r.get("usage")),
    "gemini": lambda r: usage_from_gemini(r.get("usageMetadata")),
}


def _usage_of(wire: str, reply: dict, req) -> dict:
    usage = _USAGE[wire](reply)
    if usage is not None and usage["total_tokens"]:
        return usage
    return estimated_usage(req.body, len(_reply_text(wire, reply)))


def _reply_text(wire: str, reply: dict) -> str:
    if wire == "anthropic":
        return text_of(reply.get("content"))
    if wire == "gemini":
        return "".join(p.get("text", "") for c in reply.get("candidates") or ()
                       for p in (c.get("content") or {}).get("parts") or ())
    return "".join(text_of((c.get("message") or {}).get("content")) or c.get("text") or ""
                   for c in reply.get("choices") or ())


def reply_usage(wire: str, body: bytes, req) -> dict:
    """Normalized usage of a whole upstream reply; estimated when it carries none.

    Raises ``UpstreamFailure`` when the body is not a JSON object: a 200 with garbage is
    an upstream failure, and this is the one parse every successful reply goes through.
    """
    reply = _loads(body)
    if getattr(req, "endpoint", "chat") == "embeddings":
        usage = usage_from_openai(reply.get("usage"))
        return usage if usage is not None else make_usage(estimate_tokens(prompt_chars(req.body)), 0, estimated=True)
    return _usage_of(wire, reply, req)


def make_relay(wire: str, req, model: str):
    """A fresh stream relay from ``wire`` to the caller's API."""
    api = req.api
    if wire == api:
        if wire == "anthropic":
            return AnthropicStreamRelay(req.body)
        from .openai import OpenAIStreamRelay
        return OpenAIStreamRelay(req.client_wants_usage, req.body)
    def estimate(chars: int) -> dict:
        return estimated_usage(req.body, chars)

    stages: list = []
    if wire == "anthropic":
        stages.append(AnthropicToOpenAIStream(req.client_wants_usage, estimate))
    elif wire == "gemini":
        stages.append(GeminiToOpenAIStream(model, api == "anthropic" or req.client_wants_usage, estimate))
    if api == "anthropic":
        stages.append(OpenAIToAnthropicStream(model, estimate))
    return TranslatingRelay(stages, api, req.body)
