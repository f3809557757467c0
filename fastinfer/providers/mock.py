"""The built-in ``mock`` provider: answers in-process, no network.

Owns: generating OpenAI-shaped completions and chunk streams with configurable
token count, time to first token and inter-token delay, so that a new user
gets a streamed answer from ``fastinfer serve`` with no upstream at all. Its
format is OpenAI's, so callers of any API get it translated like any
OpenAI-shaped upstream's. Also the word/token helpers shared with ``mock-upstream``.

Must not touch: routing, admission, HTTP server objects.
"""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import orjson

from ..formats.common import new_id
from ..transport import IteratorStream, UpstreamReply
from .base import Provider


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(body: dict) -> int:
    """A crude, deterministic token count: words in every message (at least 1)."""
    messages = body.get("messages") or []
    n = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    return max(1, n)


def completion_words(body: dict, n_tokens: int, text: str = "echo") -> list[str]:
    """``n_tokens`` pieces of text, each a token: the last user message repeated, or ``text``."""
    if n_tokens <= 0:
        return []
    if text == "echo":
        messages = body.get("messages") or []
        last = _text_of(messages[-1].get("content")) if messages and isinstance(messages[-1], dict) else ""
        source = last.split() or ["echo"]
    else:
        source = text.split() or [text]
    return [source[i % len(source)] + " " for i in range(n_tokens)]


class MockProvider(Provider):
    """Echo provider: behaves like an OpenAI upstream answering from memory."""

    __slots__ = ("knobs",)

    def __init__(self, deployment, kind):
        super().__init__(deployment, kind)
        self.knobs = deployment.mock
        # it makes chat answers only: /v1/completions and /v1/embeddings get the documented 400,
        # not a chat.completion in place of what was asked for
        self.endpoints = tuple(e for e in self.endpoints if e not in ("completions", "embeddings"))

    async def send(self, session, req, body: dict, timeouts, extra: dict | None = None) -> UpstreamReply:
        stream = req.stream
        knobs = self.knobs
        n = knobs.tokens
        if isinstance(body.get("max_tokens"), int):
            n = min(n, body["max_tokens"])
        words = completion_words(body, n, knobs.text)
        usage = {"prompt_tokens": count_prompt_tokens(body), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        created = int(time.time())
        head = {"id": new_id("chatcmpl-"), "created": created, "model": self.deployment.upstream_model}
        if knobs.ttft_ms:
            await asyncio.sleep(knobs.ttft_ms / 1000)
        if not stream:
            answer = {**head, "object": "chat.completion",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                                   "finish_reason": "stop"}],
                      "usage": usage}
            return UpstreamReply.complete(200, orjson.dumps(answer))
        return await IteratorStream.open(self._chunks(head, words, usage, knobs.itl_ms / 1000))

    async def _chunks(self, head: dict, words: list[str], usage: dict, itl: float) -> AsyncIterator[bytes]:
        head = {**head, "object": "chat.completion.chunk"}
        yield b"data: " + orjson.dumps({**head, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}) + b"\n\n"
        for w in words:
            if itl:
                await asyncio.sleep(itl)
            yield b"data: " + orjson.dumps({**head, "choices": [
                {"index": 0, "delta": {"content": w}, "finish_reason": None}]}) + b"\n\n"
        yield b"data: " + orjson.dumps({**head, "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"
