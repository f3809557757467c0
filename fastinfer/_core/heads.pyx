# cython: language_level=3, boundscheck=False, wraparound=False
"""HTTP/1.1 heads of the data path, read and written in one C pass: runs once per request.

Owns: ``plain_post``, which reads a client's request head when it has the plain shape of a data
request (an HTTP/1.1 ``POST``, every byte in a strict subset llhttp reads the same way) and says
nothing (``None``) about any other, which the caller then reads with llhttp as before; and
``whole_response``, the same for an upstream's answer that came whole in one read (a Content-Length
body, no interim answer); and ``answer_head``, which writes the head of an answer the gateway sends
in one allocation, checking its fields for control characters as it sizes them. The subset
is spelled out in the reference, ``fastinfer._core.ref.heads``; the tests hold the two to the same
answers, and every head this one reads to llhttp's reading of it.

Why: llhttp through httptools calls back into Python once per field, once for the target or the
body, and each call decodes its bytes; here one pass over the head checks every byte against a
table and makes only the strings the caller keeps.

Must not touch: sockets, asyncio, what the fields mean beyond framing. Bytes in, plain values out.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeASCII
from libc.stdio cimport snprintf
from libc.string cimport memcmp, memcpy


cdef extern from "string.h" nogil:
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

__all__ = ["answer_head", "plain_post", "whole_response"]

cdef enum:
    MAX_LENGTH_DIGITS = 18

# the byte classes of the subset (see the reference): bit 1 a tchar, bit 2 a target byte,
# bit 4 a field-value byte
cdef unsigned char CLASS[256]


cdef void _mark(bytes members, unsigned char bit):
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(members)
    cdef Py_ssize_t i
    for i in range(PyBytes_GET_SIZE(members)):
        CLASS[p[i]] |= bit


cdef int _init_classes() except -1:
    cdef int c
    for c in range(256):
        CLASS[c] = 0
    _mark(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 1)
    _mark(b"/_.-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 2)
    for c in range(0x20, 0x7F):
        CLASS[c] |= 4
    CLASS[0x09] |= 4
    return 0


_init_classes()


cdef inline bint _is_ows(unsigned char c):
    return c == 0x20 or c == 0x09


cdef bint _name_is(const unsigned char *name, Py_ssize_t n, const char *lowered, Py_ssize_t size):
    """``name`` equals ``lowered`` (ASCII lower case) in any case."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != size:
        return False
    for i in range(n):
        c = name[i]
        if 0x41 <= c <= 0x5A:
            c += 0x20
        if c != <unsigned char>lowered[i]:
            return False
    return True


def plain_post(bytes buffer not None, Py_ssize_t head_length):
    """``(path, fields, content_length, keep_alive)`` of the head ``buffer[:head_length]`` (which
    ends with its empty line) when it has the plain shape; ``None`` when it has not. ``fields`` is a
    list of ``(name, value)`` strings in order; ``content_length`` is 0 without the field."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buffer)
    cdef Py_ssize_t end, i, target_end, name_start, name_end, value_start, value_end
    cdef long long content_length = -1
    cdef int keep_alive = -1       # -1: no Connection field yet
    if head_length < 4 or head_length > PyBytes_GET_SIZE(buffer):
        return None
    end = head_length - 2          # the empty line's CR LF
    if memcmp(p + end - 2, b"\r\n\r\n", 4) != 0:
        return None
    # request line: "POST /<target> HTTP/1.1\r\n"
    if end < 6 or memcmp(p, b"POST /", 6) != 0:
        return None
    i = 5
    while i < end and CLASS[p[i]] & 2:
        i += 1
    target_end = i
    if end - i < 11 or memcmp(p + i, b" HTTP/1.1\r\n", 11) != 0:
        return None
    path = PyUnicode_DecodeASCII(<const char *>p + 5, target_end - 5, NULL)
    i += 11
    fields = []
    while i < end:
        i = _field(p, i, &name_start, &name_end, &value_start, &value_end, &content_length, &keep_alive)
        if i < 0:
            return None
        # llhttp keeps the spaces after a value: so do we
        fields.append((PyUnicode_DecodeASCII(<const char *>p + name_start, name_end - name_start, NULL),
                       PyUnicode_DecodeASCII(<const char *>p + value_start, value_end - value_start, NULL)))
    return path, fields, content_length if content_length >= 0 else 0, keep_alive != 0


cdef Py_ssize_t _field(const unsigned char *p, Py_ssize_t i, Py_ssize_t *name_start, Py_ssize_t *name_end,
                       Py_ssize_t *value_start, Py_ssize_t *value_end, long long *content_length,
                       int *keep_alive):
    """The field line at ``p[i]``: its name and value (the spaces before the value left out, those
    after it kept) and where the next line starts; -1 when it is outside the subset. The head's
    empty line ends every scan: each stops at a CR."""
    name_start[0] = i
    while CLASS[p[i]] & 1:
        i += 1
    name_end[0] = i
    if i == name_start[0] or p[i] != 0x3A:       # ':'
        return -1
    i += 1
    while _is_ows(p[i]):
        i += 1
    value_start[0] = i
    while CLASS[p[i]] & 4:
        i += 1
    if p[i] != 0x0D or p[i + 1] != 0x0A:           # a byte outside the subset, or a bare CR
        return -1
    value_end[0] = i
    if not _plain_field(p + name_start[0], name_end[0] - name_start[0], p + value_start[0], i - value_start[0],
                        content_length, keep_alive):
        return -1
    return i + 2


cdef bint _plain_field(const unsigned char *name, Py_ssize_t n, const unsigned char *value, Py_ssize_t v,
                       long long *content_length, int *keep_alive):
    """The field leaves the head plain; reads ``Content-Length`` and ``Connection`` as it goes."""
    cdef Py_ssize_t i
    cdef long long length = 0
    if _name_is(name, n, "content-length", 14):
        if content_length[0] >= 0 or v == 0 or v > MAX_LENGTH_DIGITS:
            return False
        for i in range(v):
            if not 0x30 <= value[i] <= 0x39:
                return False
            length = length * 10 + (value[i] - 0x30)
        content_length[0] = length
    elif _name_is(name, n, "connection", 10):
        if keep_alive[0] >= 0:         # a second one: how llhttp weighs them is its business
            return False
        if _name_is(value, v, "close", 5):
            keep_alive[0] = 0
        elif _name_is(value, v, "keep-alive", 10):
            keep_alive[0] = 1
        else:
            return False
    elif (_name_is(name, n, "transfer-encoding", 17) or _name_is(name, n, "content-encoding", 16)
          or _name_is(name, n, "expect", 6) or _name_is(name, n, "upgrade", 7)):
        return False
    return True


def whole_response(bytes data not None):
    """``(status, fields, body_start, keep_alive)`` when ``data`` is exactly one complete upstream
    answer of the plain shape (see the reference), ``None`` for anything else, which the caller then
    feeds to llhttp. ``fields`` maps each lower-cased name to its value without the spaces around it
    (the last of a repeated name wins)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t end, i, name_start, name_end, value_start, value_end
    cdef long long content_length = -1
    cdef int keep_alive = -1
    cdef int status
    cdef const unsigned char *found = <const unsigned char *>memmem(p, size, b"\r\n\r\n", 4)
    if found == NULL:
        return None
    end = found - p + 2            # the empty line's CR LF
    if end < 15 or memcmp(p, b"HTTP/1.1 ", 9) != 0 or p[12] != 0x20:
        return None
    for i in range(9, 12):
        if not 0x30 <= p[i] <= 0x39:
            return None
    status = (p[9] - 0x30) * 100 + (p[10] - 0x30) * 10 + (p[11] - 0x30)
    if status < 200 or status == 204 or status == 304:
        return None
    i = 13
    while CLASS[p[i]] & 4:
        i += 1
    if p[i] != 0x0D or p[i + 1] != 0x0A:
        return None
    i += 2
    fields = {}
    while i < end:
        i = _field(p, i, &name_start, &name_end, &value_start, &value_end, &content_length, &keep_alive)
        if i < 0:
            return None
        while value_end > value_start and _is_ows(p[value_end - 1]):
            value_end -= 1
        fields[_lowered(p + name_start, name_end - name_start)] = PyUnicode_DecodeASCII(
            <const char *>p + value_start, value_end - value_start, NULL)
    if content_length < 0 or size - (end + 2) != content_length:
        return None
    return status, fields, end + 2, keep_alive != 0


cdef str _lowered(const unsigned char *name, Py_ssize_t n):
    """An ASCII field name in lower case (one small allocation; the common names are already so)."""
    cdef bytearray out = bytearray(n)
    cdef unsigned char *q = out
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = name[i]
        q[i] = c + 0x20 if 0x41 <= c <= 0x5A else c
    return PyUnicode_DecodeASCII(<const char *>q, n, NULL)


def answer_head(bytes status_line not None, headers, bytes tail not None, Py_ssize_t length, bint keep_alive):
    """An HTTP/1.1 answer's head: ``status_line``, each of ``headers`` (a mapping or a multidict of
    strings, UTF-8 encoded) as ``name: value``, ``tail`` (fields ending in CR LF), ``Content-Length``
    unless ``length`` is negative, ``Connection: close`` unless ``keep_alive``, and the empty line.
    A control character other than tab in a name or value is a ``ValueError`` (header injection),
    as aiohttp refuses it."""
    cdef list items = list(headers.items())
    cdef Py_ssize_t size = PyBytes_GET_SIZE(status_line) + PyBytes_GET_SIZE(tail) + 2
    cdef Py_ssize_t n
    cdef const char *s
    cdef char number[24]
    cdef int digits = 0
    cdef char *out
    for name, value in items:
        size += _utf8_size(name) + _utf8_size(value) + 4
    if length >= 0:
        digits = snprintf(number, sizeof(number), "%zd", length)
        size += 18 + digits          # "Content-Length: " and CR LF
    if not keep_alive:
        size += 19
    head = PyBytes_FromStringAndSize(NULL, size)
    out = PyBytes_AS_STRING(head)
    out = _put(out, PyBytes_AS_STRING(status_line), PyBytes_GET_SIZE(status_line))
    for name, value in items:
        s = PyUnicode_AsUTF8AndSize(name, &n)
        out = _put(out, s, n)
        out = _put(out, ": ", 2)
        s = PyUnicode_AsUTF8AndSize(value, &n)
        out = _put(out, s, n)
        out = _put(out, "\r\n", 2)
    out = _put(out, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail))
    if length >= 0:
        out = _put(out, "Content-Length: ", 16)
        out = _put(out, number, digits)
        out = _put(out, "\r\n", 2)
    if not keep_alive:
        out = _put(out, "Connection: close\r\n", 19)
    _put(out, "\r\n", 2)
    return head


cdef Py_ssize_t _utf8_size(object text) except -1:
    """The UTF-8 size of a header's name or value, which must be a string without control characters."""
    cdef Py_ssize_t n, i
    cdef const unsigned char *s
    if not isinstance(text, str):
        raise TypeError(f"a header's name and value must be strings, not {type(text).__name__}")
    s = <const unsigned char *>PyUnicode_AsUTF8AndSize(text, &n)
    for i in range(n):
        if (s[i] < 0x20 and s[i] != 0x09) or s[i] == 0x7F:
            raise ValueError("Forbidden control character in an answer's headers")
    return n


cdef inline char *_put(char *out, const char *s, Py_ssize_t n):
    memcpy(out, s, n)
    return out + n
