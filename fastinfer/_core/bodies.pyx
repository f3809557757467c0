# cython: language_level=3, boundscheck=False, wraparound=False
"""What every request reads of a parsed JSON body, compiled.

Owns: ``chat_chars``, the count of the commonest body's prompt without walking it (``messages``
whose text is a string ``content`` or none, a string ``system`` at most), -1 for any other
shape: what a ``tpm`` limit's estimate starts from; and ``openai_usage``, an OpenAI answer's
``usage`` normalized, which every OpenAI-shaped answer goes through. Same API and behaviour as
the reference ``fastinfer._core.ref.bodies``, whose docstrings give the rules; the tests hold
the two to the same answers on generated bodies.

Why: each was some 80 interpreted opcodes a request (a loop, or a dozen lookups and checks);
here they are dict lookups in C.

Must not touch: what a token is (the caller divides), prices, HTTP.
"""
from cpython.dict cimport PyDict_Contains, PyDict_GetItem
from cpython.object cimport PyObject

__all__ = ["chat_chars", "openai_usage"]


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
