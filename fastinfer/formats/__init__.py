"""Translation between the wire formats: OpenAI Chat Completions, Anthropic Messages, Gemini.

Owns: pure functions that turn request bodies, whole replies and stream events
of one format into another, the normalized usage dict, and the relay that
runs stream translators over the compiled SSE parser. OpenAI chat is the pivot:
Anthropic and Gemini each translate to and from it, and a pair without a
direct translator (Anthropic caller, Gemini upstream) is composed through it.

Must not touch: HTTP, sockets, asyncio, configuration objects, routing. Every
function takes plain dicts / bytes and returns plain dicts / bytes, so every
translation is unit-testable without a server.

Modules: ``common`` (usage, finish reasons, images, ids), ``anthropic``
(OpenAI <-> Anthropic), ``gemini`` (OpenAI <-> Gemini), ``relay`` (stream
relays, caller-format error events), ``dispatch`` (which translation a
(upstream wire format, caller API) pair takes). Nothing is imported here, so
providers can import ``common`` without pulling the relays in.
"""
