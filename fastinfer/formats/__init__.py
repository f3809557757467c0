"""Formats: one module per wire format, and the registry of them.

Owns: how each wire format's requests, whole replies, usage, streams, error
bodies and error events look, and the translation between formats through
OpenAI chat (the pivot): ``openai`` (Chat Completions; completions and
embeddings passed through), ``anthropic`` (Messages), ``gemini``
(``generateContent``), each a ``Format`` (``base``); ``relay`` (the stream
relays); ``common`` (usage, finish reasons, images, ids). ``FORMATS`` names
them: a caller's API (``GatewayRequest.api``) is the name of its format.

Must not touch: HTTP, sockets, asyncio, routing, configuration beyond a
deployment's upstream model, provider, ``default_max_tokens`` and ``drop_params``.
Every translation is a pure function of dicts and bytes, unit-testable without
a server.
"""
from .anthropic import ANTHROPIC
from .base import Format
from .gemini import GEMINI
from .openai import OPENAI
from .relay import StreamRelay

FORMATS: dict[str, Format] = {f.name: f for f in (OPENAI, ANTHROPIC, GEMINI)}

__all__ = ["ANTHROPIC", "FORMATS", "Format", "GEMINI", "OPENAI", "StreamRelay"]
