"""Pure-Python reference of ``fastinfer._core.prompt``: the characters of a chat body's prompt.

Owns: ``chat_chars``, the count of the commonest body's text without walking it: ``messages``
whose text is a string ``content`` (or none), a string ``system`` at most; -1 for any other
shape, which the caller then counts by walking every text field
(``formats.common.walked_prompt_chars``, which must agree wherever this one counts). Same
API and behaviour as the compiled module; the oracle the tests compare it against.

Must not touch: what a token is (the caller divides), HTTP.
"""
from __future__ import annotations


def chat_chars(body: dict) -> int:
    """Characters of ``body``'s prompt when it has the commonest shape, else -1."""
    messages = body.get("messages")
    if type(messages) is not list or "contents" in body or "prompt" in body or "input" in body \
            or "systemInstruction" in body:
        return -1
    system = body.get("system")
    if system is None:
        total = 0
    elif type(system) is str:
        total = len(system)
    else:
        return -1
    for message in messages:
        if type(message) is not dict:
            return -1
        content = message.get("content")
        # exactly {"role", "content"} has no other text to count; any other message is looked at
        if not (len(message) == 2 and content is not None and "role" in message) \
                and ("text" in message or "parts" in message or "thinking" in message):
            return -1
        if type(content) is str:
            total += len(content)
        elif content is not None:
            return -1
    return total
