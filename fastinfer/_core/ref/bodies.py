"""Pure-Python reference of ``fastinfer._core.bodies``: what every request reads of a parsed JSON body.

Owns: ``chat_chars``, the count of the commonest body's text without walking it: ``messages``
whose text is a string ``content`` (or none), a string ``system`` at most; -1 for any other
shape, which the caller then counts by walking every text field (``walked_chars``, which must
agree wherever this one counts); ``walked_chars``, that walk: every string under the prompt's
fields, under ``text`` / ``content`` / ``parts`` / ``thinking`` keys or in lists; and
``openai_usage``, an OpenAI ``usage`` object normalized (``formats.common.make_usage``'s
shape), any count that is not an integer read as 0; and ``json_depth_exceeds``, whether a
valid JSON text nests arrays and objects deeper than a limit, read on its bytes. Same API and
behaviour as the compiled module; the oracle the tests compare it against.

``prompt_tokens``, a prompt's characters in tokens (``CHARS_PER_TOKEN`` a token, rounded up), and
``usage_estimate``, the usage of an answer its upstream did not count, built on it;
``request_tokens``, a request's charge at admission: its ``prompt_tokens`` and, when it sets one,
``max_tokens`` (else ``max_completion_tokens``) for every choice it asks for (``n``).

Must not touch: prices, HTTP. What a token is, before an upstream counts it, is
``constants.CHARS_PER_TOKEN``.
"""
from __future__ import annotations

import orjson

from ..constants import CHARS_PER_TOKEN, PROMPT_FIELDS, TEXT_KEYS


def prompt_tokens(body: dict) -> int:
    """A request's prompt in tokens, before an upstream counts it: its characters (``chat_chars``,
    else ``walked_chars``), ``CHARS_PER_TOKEN`` a token, rounded up."""
    chars = chat_chars(body)
    if chars < 0:
        chars = walked_chars(body)
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def usage_estimate(body: dict, completion_tokens: int) -> dict:
    """The usage of an answer its upstream did not count: the request ``body``'s ``prompt_tokens``
    and ``completion_tokens``, in ``openai_usage``'s shape, flagged ``usage_estimated``."""
    prompt = prompt_tokens(body)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens, "usage_estimated": True}


def request_tokens(body: dict) -> int:
    """A request's charge at admission (see the module)."""
    tokens = prompt_tokens(body)
    most = body.get("max_tokens") or body.get("max_completion_tokens")
    if type(most) is int:
        n = body.get("n")
        tokens += most * (n if type(n) is int and n > 1 else 1)
    return tokens


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


def openai_reply_usage(body: bytes) -> dict | None:
    """A whole OpenAI reply (its bytes) parsed: its normalized ``usage`` (``openai_usage``), None when
    it has none or it counts no token (the caller estimates one); ``ValueError`` (orjson's, or of its
    own) when the body is not a JSON object."""
    reply = orjson.loads(body)
    if type(reply) is not dict:
        raise ValueError("the reply is not a JSON object")
    usage = openai_usage(reply.get("usage"))
    return usage if usage is not None and usage["total_tokens"] else None


def openai_usage(u) -> dict | None:
    """OpenAI's ``usage``, normalized: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
    and ``cached_tokens`` / ``reasoning_tokens`` when not 0 (from ``*_tokens_details``); a count
    that is not an integer (a bool neither) is 0, details that are not an object are none; None
    when ``u`` is not an object."""
    if type(u) is not dict:
        return None
    prompt, completion = _count(u.get("prompt_tokens")), _count(u.get("completion_tokens"))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    for details, name, normalized in (("prompt_tokens_details", "cached_tokens", "cached_tokens"),
                                      ("completion_tokens_details", "reasoning_tokens", "reasoning_tokens")):
        value = u.get(details)
        count = _count(value.get(name)) if type(value) is dict else 0
        if count:
            usage[normalized] = count
    return usage


def _count(value) -> int:
    return value if type(value) is int else 0


def walked_chars(body: dict) -> int:
    """Characters of any body's prompt, found by walking every text field of its prompt's fields."""
    total = 0
    for key in PROMPT_FIELDS:
        value = body.get(key)
        if isinstance(value, str):
            total += len(value)
        elif value is not None:
            total += _text_chars(value)
    return total


def _text_chars(value) -> int:
    """Characters of every string leaf under ``text`` / ``content`` / ``parts`` / ``thinking`` keys
    (or bare list items)."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            for k in TEXT_KEYS:
                if k in v:
                    stack.append(v[k])
    return total


# every byte but quotes and brackets deleted, braces made brackets: the structure is what is left
_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Does this (valid) JSON text nest arrays and objects more than ``limit`` deep?

    Counted on the bytes with C-speed bytes methods, about the cost of parsing them:
    escaped backslashes and quotes go first (left to right, as JSON pairs them), so every
    quote left opens or closes a string; then all but quotes and brackets. A text with
    at most ``limit`` opening brackets cannot be too deep. Else the brackets inside
    strings are cut out (empty strings first: dropping two adjacent quotes keeps every
    other quote's parity), and innermost pairs are removed ``limit`` times, each pass
    peeling one level everywhere; anything left is deeper than the limit.
    """
    if len(raw) <= 4096 and raw.count(b"[") + raw.count(b"{") <= limit:
        return False   # the common small body: two counts are cheaper than what follows
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(_BRACKETS_ONLY, _NOT_STRUCTURE)
    if structure.count(b"[") <= limit:
        return False
    structure = structure.replace(b'""', b"")
    if b'"' in structure:   # some strings hold brackets
        structure = b"".join(structure.split(b'"')[::2])
    for _ in range(limit):
        if not structure:
            return False
        structure = structure.replace(b"[]", b"")
    return bool(structure)
