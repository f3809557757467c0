# cython: language_level=3, boundscheck=False, wraparound=False
"""The characters of a chat body's prompt, compiled: runs for every request under a ``tpm`` limit.

Owns: ``chat_chars``, the count of the commonest body's text without walking it (``messages``
whose text is a string ``content`` or none, a string ``system`` at most), -1 for any other shape.
Same API and behaviour as the reference ``fastinfer._core.ref.prompt``, whose docstring gives
the rules; the tests hold the two to the same count on generated bodies.

Why: the Python loop was some 80 interpreted opcodes of every keyed request with a ``tpm``;
here each message is two dict lookups in C.

Must not touch: what a token is (the caller divides), HTTP.
"""
from cpython.dict cimport PyDict_Contains, PyDict_GetItem
from cpython.object cimport PyObject

__all__ = ["chat_chars"]


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
