# cython: language_level=3, boundscheck=False, wraparound=False
"""What every request reads of a parsed JSON body, compiled.

Owns: ``chat_chars``, the count of the commonest body's prompt without walking it (``messages``
whose text is a string ``content`` or none, a string ``system`` at most), -1 for any other
shape: what a ``tpm`` limit's estimate starts from; ``walked_chars``, the count of any other
body's prompt by walking every text field (content parts, Anthropic's blocks, Gemini's parts);
``openai_usage``, an OpenAI answer's ``usage`` normalized, which every OpenAI-shaped answer goes
through, and ``openai_reply_usage``, a whole OpenAI reply's, parsed and checked in one call; and ``json_depth_exceeds``, whether a client's (valid) JSON body nests deeper than the
gateway allows, in one pass over its bytes. Same API and behaviour as the reference
``fastinfer._core.ref.bodies``, whose docstrings give the rules; the tests hold the two to the
same answers on generated bodies.

Why: ``chat_chars`` and ``openai_usage`` were some 80 interpreted opcodes a request each (a loop,
or a dozen lookups and checks), here dict lookups in C; the walk and the depth check grow with
the body (a tool-heavy body's walk 16 µs, 3.5 µs here; a 4 KiB prompt's depth check, two to six
bytes-method passes over it, 12.5 µs, 0.9 µs here: ``bench/micro/test_bench_validate.py``).

``request_tokens``: a request's charge at admission (its prompt at ``CHARS_PER_TOKEN``
characters a token, and the completion it may ask for), which every request under a ``tpm``
limit is charged.

Must not touch: prices, HTTP. What a token is, before an upstream counts it, is
``constants.CHARS_PER_TOKEN``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_GetItem
from cpython.object cimport PyObject
from libc.string cimport memchr

import orjson

from .constants import CHARS_PER_TOKEN, PROMPT_FIELDS, TEXT_KEYS

__all__ = ["chat_chars", "json_depth_exceeds", "openai_usage", "request_tokens", "walked_chars"]

cdef Py_ssize_t _CHARS_PER_TOKEN = CHARS_PER_TOKEN


cpdef object request_tokens(dict body):
    """A request's charge at admission: its prompt's characters in tokens (``CHARS_PER_TOKEN``
    a token, rounded up) and, when it sets one, ``max_tokens`` (else ``max_completion_tokens``)
    for every choice it asks for (``n``)."""
    cdef Py_ssize_t chars = chat_chars(body)
    if chars < 0:
        chars = walked_chars(body)
    tokens = (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN
    most = body.get("max_tokens") or body.get("max_completion_tokens")
    if type(most) is int:
        n = body.get("n")
        tokens += most * (n if type(n) is int and n > 1 else 1)
    return tokens


cpdef Py_ssize_t chat_chars(dict body) except -2:
    """Characters of ``body``'s prompt when it has the commonest shape, else -1."""
    cdef PyObject *found
    cdef object content
    cdef dict message
    cdef Py_ssize_t total = 0
    found = PyDict_GetItem(body, "messages")
    if found == NULL or type(<object>found) is not list:
        return -1
    messages = <list>found
    if "contents" in body or "prompt" in body or "input" in body or "systemInstruction" in body:
        return -1
    found = PyDict_GetItem(body, "system")
    if found != NULL and <object>found is not None:
        if type(<object>found) is not str:
            return -1
        total = len(<str>found)
    for item in messages:
        if type(item) is not dict:
            return -1
        message = <dict>item
        found = PyDict_GetItem(message, "content")
        content = <object>found if found != NULL else None
        # exactly {"role", "content"} has no other text to count; any other message is looked at
        if not (len(message) == 2 and content is not None and "role" in message) \
                and ("text" in message or "parts" in message or "thinking" in message):
            return -1
        if type(content) is str:
            total += len(<str>content)
        elif content is not None:
            return -1
    return total


cdef inline object _count(object value):
    return value if type(value) is int else 0


cdef inline object _detail(dict u, str details, str name):
    cdef PyObject *found = PyDict_GetItem(u, details)
    if found == NULL or type(<object>found) is not dict:
        return 0
    found = PyDict_GetItem(<dict>found, name)
    return _count(<object>found) if found != NULL else 0


cdef object _loads = orjson.loads


def openai_reply_usage(body):
    """A whole OpenAI reply's normalized usage (see the reference); ``ValueError`` when it is not a
    JSON object."""
    reply = _loads(body)
    if type(reply) is not dict:
        raise ValueError("the reply is not a JSON object")
    cdef PyObject *found = PyDict_GetItem(<dict>reply, "usage")
    if found == NULL:
        return None
    usage = openai_usage(<object>found)
    return usage if usage is not None and usage["total_tokens"] else None


def openai_usage(u):
    """OpenAI's ``usage``, normalized (see the reference); None when ``u`` is not an object."""
    if type(u) is not dict:
        return None
    cdef dict d = <dict>u
    cdef PyObject *found = PyDict_GetItem(d, "prompt_tokens")
    prompt = _count(<object>found) if found != NULL else 0
    found = PyDict_GetItem(d, "completion_tokens")
    completion = _count(<object>found) if found != NULL else 0
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    cached = _detail(d, "prompt_tokens_details", "cached_tokens")
    if cached:
        usage["cached_tokens"] = cached
    reasoning = _detail(d, "completion_tokens_details", "reasoning_tokens")
    if reasoning:
        usage["reasoning_tokens"] = reasoning
    return usage


cpdef Py_ssize_t walked_chars(dict body) except -1:
    """Characters of any body's prompt: every string under its prompt's fields, under ``text`` /
    ``content`` / ``parts`` / ``thinking`` keys or in lists."""
    cdef Py_ssize_t total = 0
    cdef PyObject *found
    for key in PROMPT_FIELDS:
        found = PyDict_GetItem(body, key)
        if found == NULL or <object>found is None:
            continue
        if isinstance(<object>found, str):
            total += len(<object>found)
        else:
            total += _text_chars(<object>found)
    return total


cdef Py_ssize_t _text_chars(object value) except -1:
    """The characters under ``value``, depth first: a string's, each list item's, a dict's text keys'.
    (Recursion is bounded: a body nests at most ``gateway.body.MAX_JSON_DEPTH`` levels.)"""
    cdef Py_ssize_t total = 0
    cdef PyObject *found
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        for item in <list>value:
            total += _text_chars(item)
    elif type(value) is dict:
        for k in TEXT_KEYS:
            found = PyDict_GetItem(value, k)
            if found != NULL:
                total += _text_chars(<object>found)
    elif isinstance(value, dict):       # a subclass: its own lookups
        for k in TEXT_KEYS:
            if k in value:
                total += _text_chars(value[k])
    return total


cpdef bint json_depth_exceeds(bytes raw, Py_ssize_t limit) except -1:
    """Does this (valid) JSON text nest arrays and objects more than ``limit`` deep? One pass: a
    string is skipped whole (an escape's backslash takes the next byte with it), an opening bracket
    is a level in, a closing one a level out."""
    if raw is None:
        raise TypeError("json_depth_exceeds: raw must be bytes")
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i = 0, depth = 0
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 0x22:                   # '"': past the string's closing quote
            i = _string_end(p, i + 1, n)
            continue
        elif c == 0x5B or c == 0x7B:    # '[' '{'
            depth += 1
            if depth > limit:
                return True
        elif c == 0x5D or c == 0x7D:    # ']' '}'
            depth -= 1
        i += 1
    return False


cdef inline Py_ssize_t _string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Where the string whose text starts at ``p[i]`` has ended (past its closing quote; ``n`` when it
    does not close): the next quote found by ``memchr`` closes it unless an odd run of backslashes
    (counted back to the text's start, or the last quote) escapes it. Prompts are mostly strings."""
    cdef const unsigned char *quote
    cdef Py_ssize_t j, k
    while True:
        quote = <const unsigned char *>memchr(p + i, 0x22, n - i)
        if quote == NULL:
            return n
        j = quote - p
        k = j
        while k > i and p[k - 1] == 0x5C:
            k -= 1
        if (j - k) % 2 == 0:
            return j + 1
        i = j + 1
