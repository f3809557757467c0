# cython: language_level=3, boundscheck=False, wraparound=False
"""HTTP/1.1 heads of the data path, read and written in one C pass: runs once per request.

Owns: ``plain_post``, which reads a client's request head when it has the plain shape of a data
request (an HTTP/1.1 ``POST``, every byte in a strict subset llhttp reads the same way) and says
nothing (``None``) about any other, which the caller then reads with llhttp as before;
``whole_response``, the same for an upstream's answer that came whole in one read (a Content-Length
body, no interim answer); ``chunked_head``, the same for a chunked answer's head (a stream), whose
body ``ChunkedBody`` then reads read by read, giving what each read completes as one bytes object;
``answer_head``, which writes the head of an answer the gateway sends
in one allocation, checking its fields for control characters as it sizes them; and
``framed_chunk``, a relayed stream's chunk in the chunked framing, written the same way. The subset
is spelled out in the reference, ``fastinfer._core.ref.heads``; the tests hold the two to the same
answers, and every head this one reads to llhttp's reading of it.

Why: llhttp through httptools calls back into Python once per field, once for the target or each
chunk of a body, and each call decodes its bytes; here one pass over the head checks every byte against a
table and makes only the strings the caller keeps.

Must not touch: sockets, asyncio, what the fields mean beyond framing. Bytes in, plain values out.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_CheckExact, PyUnicode_DecodeASCII
from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, strlen
from libc.time cimport gmtime_r, time, time_t, tm


cdef extern from "decimal.h" nogil:
    int fi_decimal(char *out, long long n)
    void fi_two_digits(char *out, int n)
    void fi_year(char *out, int year)
    void fi_clock(char *out, int hour, int minute, int second)

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL
    void PyMem_Free(void *p)
    bint PyLong_CheckExact(object o)
    bint PyUnicode_IS_ASCII(object o)
    bint PyFloat_CheckExact(object o)
    double PyFloat_AS_DOUBLE(object o)
    long long PyLong_AsLongLong(object o) except? -1

cdef extern from "string.h" nogil:
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

__all__ = ["AnswerFields", "ChunkedBody", "Fields", "answer_head", "chunk_size_line", "chunked_head", "framed_chunk",
           "plain_post", "whole_response"]

cdef enum:
    MAX_LENGTH_DIGITS = 18
    NO_FIELD = -1           # Content-Length: not in the head
    CHUNKED_BODY = -2       # ... Transfer-Encoding: chunked instead

cdef long long MAX_CHUNK_SIZE = 1LL << 59
cdef enum:
    PIECES_ON_STACK = 128   # a read's pieces of chunk data kept without a heap allocation
    SPANS_ON_STACK = 32     # a request head's fields kept without a heap allocation

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


cdef inline Py_ssize_t _trimmed(const unsigned char *value, Py_ssize_t v):
    """The length of ``value`` without the spaces and tabs after it."""
    while v > 0 and _is_ows(value[v - 1]):
        v -= 1
    return v


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
    ends with its empty line) when it has the plain shape; ``None`` when it has not. ``fields`` are
    the head's ``Fields`` (its ``(name, value)`` pairs in order, read as they are asked for);
    ``content_length`` is 0 without the field."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buffer)
    cdef int32_t on_stack[4 * SPANS_ON_STACK]
    cdef int32_t *spans
    cdef Py_ssize_t count = 0, room = SPANS_ON_STACK
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
    i += 11
    spans = on_stack
    try:
        while i < end:
            i = _field(p, i, &name_start, &name_end, &value_start, &value_end, &content_length, &keep_alive)
            if i < 0:
                return None
            # llhttp keeps the spaces after a value: so do we
            spans = _add_span(spans, on_stack, count, &room, name_start, name_end, value_start, value_end)
            count += 1
        path = PyUnicode_DecodeASCII(<const char *>p + 5, target_end - 5, NULL)
        return (path, _fields(PyBytes_FromStringAndSize(<const char *>p, head_length), spans, count),
                content_length if content_length >= 0 else 0, keep_alive != 0)
    finally:
        if spans != on_stack:
            free(spans)


cdef int32_t *_add_span(int32_t *spans, int32_t *on_stack, Py_ssize_t count, Py_ssize_t *room,
                        Py_ssize_t name_start, Py_ssize_t name_end, Py_ssize_t value_start,
                        Py_ssize_t value_end) except NULL:
    """Field ``count``'s span kept in ``spans`` (``room`` fields' worth; when full, twice that is
    allocated, the spans so far copied, and ``spans`` freed unless it is ``on_stack``): the array."""
    cdef int32_t *more
    if count == room[0]:
        more = <int32_t *>malloc(8 * room[0] * sizeof(int32_t))
        if more == NULL:
            raise MemoryError()
        memcpy(more, spans, 4 * room[0] * sizeof(int32_t))
        if spans != on_stack:
            free(spans)
        spans = more
        room[0] *= 2
    spans[4 * count] = <int32_t>name_start
    spans[4 * count + 1] = <int32_t>name_end
    spans[4 * count + 2] = <int32_t>value_start
    spans[4 * count + 3] = <int32_t>value_end
    return spans


cdef Fields _fields(bytes head, const int32_t *spans, Py_ssize_t count):
    cdef Fields fields = Fields.__new__(Fields)
    _keep_spans(fields, head, spans, count)
    return fields


cdef int _keep_spans(Fields fields, bytes head, const int32_t *spans, Py_ssize_t count) except -1:
    fields._head = head
    fields._spans = PyBytes_FromStringAndSize(<const char *>spans, 4 * count * sizeof(int32_t))
    fields._at = <const int32_t *>PyBytes_AS_STRING(fields._spans)
    fields._count = count
    return 0


cdef object _NO_DEFAULT = object()     # before Fields: getall's default is made with the class


cdef class Fields:
    """A plain head's fields where they lie (``plain_post``'s): a case-insensitive, read-only
    mapping of the field names to their values that makes a string only of what is asked for.
    It answers the calls the gateway makes of a request's headers as a ``CIMultiDictProxy`` of
    the same fields does (``get``, ``[]``, ``in``, ``getall``, ``items``...: the first field of a
    name for one value, every one in order for ``getall``), without the two strings a field, the
    list, the multidict and its proxy that a request's head used to cost. It equals a list of
    ``(name, value)`` pairs, or anything whose ``items()`` gives them (another ``Fields``, its
    twin's, a mapping), with the same pairs in the same order."""
    def __init__(self):
        raise TypeError("Fields are made by plain_post")

    cdef Py_ssize_t _find(self, key, Py_ssize_t start) except -2:
        """The first field from ``start`` whose name is ``key`` in any case; -1 for none."""
        cdef Py_ssize_t n, i, k, size
        cdef const char *name
        cdef const unsigned char *field
        cdef const unsigned char *h = <const unsigned char *>PyBytes_AS_STRING(self._head)
        cdef unsigned char a, b
        if not isinstance(key, str):
            raise TypeError("a field name must be a str")
        if not PyUnicode_IS_ASCII(key):
            return -1          # every name in the subset is ASCII
        name = PyUnicode_AsUTF8AndSize(key, &n)
        for i in range(start, self._count):
            size = self._at[4 * i + 1] - self._at[4 * i]
            if size != n:
                continue
            field = h + self._at[4 * i]
            for k in range(n):
                a = field[k]
                b = <unsigned char>name[k]
                if 0x41 <= a <= 0x5A:
                    a += 0x20
                if 0x41 <= b <= 0x5A:
                    b += 0x20
                if a != b:
                    break
            else:
                return i
        return -1

    cdef str _name(self, Py_ssize_t i):
        return PyUnicode_DecodeASCII(PyBytes_AS_STRING(self._head) + self._at[4 * i],
                                     self._at[4 * i + 1] - self._at[4 * i], NULL)

    cdef str _value(self, Py_ssize_t i):
        return PyUnicode_DecodeASCII(PyBytes_AS_STRING(self._head) + self._at[4 * i + 2],
                                     self._at[4 * i + 3] - self._at[4 * i + 2], NULL)

    def get(self, key, default=None):
        cdef Py_ssize_t i = self._find(key, 0)
        return default if i < 0 else self._value(i)

    def __getitem__(self, key):
        cdef Py_ssize_t i = self._find(key, 0)
        if i < 0:
            raise KeyError(key)
        return self._value(i)

    def __contains__(self, key):
        return isinstance(key, str) and self._find(key, 0) >= 0

    def getall(self, key, default=_NO_DEFAULT):
        cdef list values = []
        cdef Py_ssize_t i = self._find(key, 0)
        while i >= 0:
            values.append(self._value(i))
            i = self._find(key, i + 1)
        if values:
            return values
        if default is _NO_DEFAULT:
            raise KeyError(key)
        return default

    def __len__(self):
        return self._count

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        return [self._name(i) for i in range(self._count)]

    def values(self):
        return [self._value(i) for i in range(self._count)]

    def items(self):
        return [(self._name(i), self._value(i)) for i in range(self._count)]

    def __eq__(self, other):
        if isinstance(other, (list, tuple)):
            return self.items() == list(other)
        items = getattr(other, "items", None)      # another Fields (its twin's too), a mapping
        return NotImplemented if items is None else self.items() == list(items())

    __hash__ = None

    def __repr__(self):
        return f"<{type(self).__name__} {self.items()!r}>"


cdef class AnswerFields(Fields):
    """An upstream answer head's fields where they lie (``whole_response``'s and
    ``chunked_head``'s): read as the dict of its lower-cased names to their values (the spaces
    around a value left out) that they were before, the last of a repeated name winning, and
    equal to that dict; nothing is made of a field nobody asks for (on the usual 200, none:
    only a failed answer's fields are read, by ``engine.classify``)."""

    cdef Py_ssize_t _find_last(self, key) except -2:
        cdef Py_ssize_t i = self._find(key, 0), last = -1
        while i >= 0:
            last = i
            i = self._find(key, i + 1)
        return last

    def get(self, key, default=None):
        cdef Py_ssize_t i = self._find_last(key)
        return default if i < 0 else self._value(i)

    def __getitem__(self, key):
        cdef Py_ssize_t i = self._find_last(key)
        if i < 0:
            raise KeyError(key)
        return self._value(i)

    cdef dict _as_dict(self):
        cdef dict out = {}
        cdef Py_ssize_t i
        for i in range(self._count):
            out[self._name(i).lower()] = self._value(i)
        return out

    def __len__(self):
        return len(self._as_dict())

    def __bool__(self):
        # without it, truth asks ``__len__``, which makes the whole dict (a stream's reply is tested)
        return self._count > 0

    def keys(self):
        return list(self._as_dict())

    def values(self):
        return list(self._as_dict().values())

    def items(self):
        return list(self._as_dict().items())

    def __eq__(self, other):
        items = getattr(other, "items", None)       # a dict, another AnswerFields, its twin's
        return NotImplemented if items is None else self._as_dict() == dict(items())



cdef Py_ssize_t _field(const unsigned char *p, Py_ssize_t i, Py_ssize_t *name_start, Py_ssize_t *name_end,
                       Py_ssize_t *value_start, Py_ssize_t *value_end, long long *content_length,
                       int *keep_alive, int *chunked=NULL):
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
                        content_length, keep_alive, chunked):
        return -1
    return i + 2


cdef bint _plain_field(const unsigned char *name, Py_ssize_t n, const unsigned char *value, Py_ssize_t v,
                       long long *content_length, int *keep_alive, int *chunked):
    """The field leaves the head plain; reads ``Content-Length`` and ``Connection`` as it goes, and
    with ``chunked`` (not NULL) one ``Transfer-Encoding: chunked``."""
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
    elif (chunked != NULL and chunked[0] == 0 and _name_is(name, n, "transfer-encoding", 17)
          and _name_is(value, _trimmed(value, v), "chunked", 7)):
        chunked[0] = 1
    elif (_name_is(name, n, "transfer-encoding", 17) or _name_is(name, n, "content-encoding", 16)
          or _name_is(name, n, "expect", 6) or _name_is(name, n, "upgrade", 7)):
        return False
    return True


cdef AnswerFields _response_head(bytes data, bint chunked_ok, int *status, Py_ssize_t *body_start,
                                 long long *content_length, bint *keep_alive):
    """The fields of the answer head ``data`` starts with, in the subset, and its status, where its
    body starts, its ``content_length`` (NO_FIELD, or CHUNKED_BODY) and whether it keeps the
    connection alive; None when it is not in the subset."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t end, i, name_start, name_end, value_start, value_end
    cdef int connection = -1
    cdef int chunked = 0
    cdef int32_t on_stack[4 * SPANS_ON_STACK]
    cdef int32_t *spans = on_stack
    cdef Py_ssize_t count = 0, room = SPANS_ON_STACK
    cdef AnswerFields fields
    cdef const unsigned char *found = <const unsigned char *>memmem(p, size, b"\r\n\r\n", 4)
    if found == NULL:
        return None
    end = found - p + 2            # the empty line's CR LF
    if end < 15 or memcmp(p, b"HTTP/1.1 ", 9) != 0 or p[12] != 0x20:
        return None
    for i in range(9, 12):
        if not 0x30 <= p[i] <= 0x39:
            return None
    status[0] = (p[9] - 0x30) * 100 + (p[10] - 0x30) * 10 + (p[11] - 0x30)
    if status[0] < 200 or status[0] == 204 or status[0] == 304:
        return None
    i = 13
    while CLASS[p[i]] & 4:
        i += 1
    if p[i] != 0x0D or p[i + 1] != 0x0A:
        return None
    i += 2
    content_length[0] = NO_FIELD
    try:
        while i < end:
            i = _field(p, i, &name_start, &name_end, &value_start, &value_end, content_length, &connection,
                       &chunked if chunked_ok else NULL)
            if i < 0:
                return None
            while value_end > value_start and _is_ows(p[value_end - 1]):
                value_end -= 1
            spans = _add_span(spans, on_stack, count, &room, name_start, name_end, value_start, value_end)
            count += 1
        if chunked:
            if content_length[0] != NO_FIELD:
                return None
            content_length[0] = CHUNKED_BODY
        body_start[0] = end + 2
        keep_alive[0] = connection != 0
        fields = AnswerFields.__new__(AnswerFields)
        _keep_spans(fields, PyBytes_FromStringAndSize(<const char *>p, end), spans, count)
        return fields
    finally:
        if spans != on_stack:
            free(spans)


def whole_response(bytes data not None):
    """``(status, fields, body_start, keep_alive)`` when ``data`` is exactly one complete upstream
    answer of the plain shape (see the reference), ``None`` for anything else, which the caller then
    feeds to llhttp. ``fields`` maps each lower-cased name to its value without the spaces around it
    (the last of a repeated name wins)."""
    cdef int status
    cdef Py_ssize_t body_start
    cdef long long content_length
    cdef bint keep_alive
    fields = _response_head(data, False, &status, &body_start, &content_length, &keep_alive)
    if fields is None or content_length < 0 or PyBytes_GET_SIZE(data) - body_start != content_length:
        return None
    return status, fields, body_start, keep_alive


def chunked_head(bytes data not None):
    """``(status, fields, body_start, keep_alive)`` when ``data`` starts with a whole answer head of
    the plain shape with ``Transfer-Encoding: chunked`` (see the reference): the body, from
    ``body_start`` on, is the caller's to read with a ``ChunkedBody``. ``None`` for anything else,
    which the caller then feeds to llhttp."""
    cdef int status
    cdef Py_ssize_t body_start
    cdef long long content_length
    cdef bint keep_alive
    fields = _response_head(data, True, &status, &body_start, &content_length, &keep_alive)
    if fields is None or content_length != CHUNKED_BODY:
        return None
    return status, fields, body_start, keep_alive


# ``ChunkState``, where in the chunked framing the next byte is (the reference's states): in heads.pxd


cdef class ChunkedBody:
    """A chunked body, read by read (the reference says what it accepts): ``feed`` gives the data a
    read completes as one bytes object (the read's own slice when it holds one piece, as a stream's
    reads mostly do), ``done`` says the last chunk and its trailers have come, ``overflowed`` that
    bytes came after them. Framing outside the subset, or more than ``max_framing`` bytes of it
    between two pieces of data, is a ``ValueError``."""

    def __cinit__(self, Py_ssize_t max_framing=8192):
        self.max_framing = max_framing
        self.state = SIZE

    cpdef bytes feed(self, bytes data, Py_ssize_t start=0):
        """The chunk data of ``data[start:]``, joined (``b""`` when it has none). (``cpdef``: the
        upstream connection calls it on every read of a stream, a C call.)"""
        if data is None:
            raise TypeError("data must be bytes, not None")
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t i = start if start > 0 else 0
        cdef Py_ssize_t take, total = 0
        # where each piece of data lies in the read (offset, length), to be copied once, into the
        # bytes that are returned, when all are known: the usual read has one (returned as its
        # slice) or a few dozen (a fast upstream's stream), more grow the list on the heap
        cdef Py_ssize_t on_stack[2 * PIECES_ON_STACK]
        cdef Py_ssize_t *pieces = on_stack
        cdef Py_ssize_t count = 0, room = PIECES_ON_STACK
        if self.done:
            if i < n:
                self.overflowed = True
            return b""
        try:
            while i < n:
                if self.state == DATA:
                    take = n - i if self.size > n - i else <Py_ssize_t>self.size
                    if count == room:
                        pieces = _more_room(pieces, on_stack, room)
                        room *= 2
                    pieces[2 * count] = i
                    pieces[2 * count + 1] = take
                    count += 1
                    total += take
                    i += take
                    self.size -= take
                    self.framing = 0
                    if self.size == 0:
                        self.state = DATA_CR
                    continue
                # the usual framing, whole in the read, in one go: a size line at its start, the
                # CR LF after data; anything else (a line split across reads, an extension, an
                # error) byte by byte, from where this left off
                if self.state == SIZE and self.digits == 0:
                    take = self._size_line(p, i, n)
                    if take > 0:
                        i += take
                        continue
                elif (self.state == DATA_CR and i + 1 < n and p[i] == 0x0D and p[i + 1] == 0x0A
                        and self.framing + 2 <= self.max_framing):
                    self.framing += 2
                    self.state = SIZE
                    i += 2
                    continue
                if self.state == END:
                    self.overflowed = True
                    break
                self.framing += 1
                if self.framing > self.max_framing:
                    raise ValueError("overlong chunk-size line or trailer")
                self._step(p[i])
                i += 1
            self.done = self.state == END
            if total == 0:
                return b""
            if count == 1:
                return PyBytes_FromStringAndSize(<const char *>p + pieces[0], pieces[1])
            return _joined(p, pieces, count, total)
        finally:
            if pieces != on_stack:
                free(pieces)

    cdef Py_ssize_t _size_line(self, const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
        """At a size line's first byte: its length when the read holds it whole as hex digits, CR,
        LF (read: the size taken, the state after the line), else 0 and nothing read. Only what
        ``_step`` would accept byte by byte without an error is read here; the rest is left to it."""
        cdef Py_ssize_t j = i
        cdef long long size = 0
        cdef int digit
        while j < n:
            digit = _hex_digit(p[j])
            if digit < 0:
                break
            size = size * 16 + digit
            if size >= MAX_CHUNK_SIZE:
                return 0
            j += 1
        if j == i or j + 1 >= n or p[j] != 0x0D or p[j + 1] != 0x0A:
            return 0
        j += 2
        if self.framing + (j - i) > self.max_framing:
            return 0
        self.framing += j - i
        self.size = size
        self.state = DATA if size else TRAILER
        return j - i

    cdef int _step(self, unsigned char c) except -1:
        cdef ChunkState state = self.state
        cdef int digit
        if state == SIZE:
            digit = _hex_digit(c)
            if digit >= 0:
                self.size = self.size * 16 + digit
                self.digits += 1
                if self.size >= MAX_CHUNK_SIZE:
                    raise ValueError("chunk size overflow")
            elif self.digits and c == 0x3B:     # ';'
                self.state = EXTENSION
            elif self.digits and c == 0x0D:
                self.state = SIZE_LF
            else:
                raise ValueError("invalid character in chunk size")
        elif state == EXTENSION:
            if c == 0x0D:
                self.state = SIZE_LF
            elif not CLASS[c] & 4:
                raise ValueError("invalid character in chunk extension")
        elif state == SIZE_LF:
            if c != 0x0A:
                raise ValueError("expected LF after chunk size")
            self.digits = 0
            self.state = DATA if self.size else TRAILER
        elif state == DATA_CR:
            if c != 0x0D:
                raise ValueError("expected CR LF after chunk data")
            self.state = DATA_LF
        elif state == DATA_LF:
            if c != 0x0A:
                raise ValueError("expected CR LF after chunk data")
            self.state = SIZE
        elif state == TRAILER:
            if c == 0x0D:
                self.state = LAST_LF
            elif CLASS[c] & 1:
                self.state = TRAILER_NAME
            else:
                raise ValueError("invalid trailer")
        elif state == TRAILER_NAME:
            if c == 0x3A:                       # ':'
                self.state = TRAILER_VALUE
            elif not CLASS[c] & 1:
                raise ValueError("invalid trailer")
        elif state == TRAILER_VALUE:
            if c == 0x0D:
                self.state = TRAILER_LF
            elif not CLASS[c] & 4:
                raise ValueError("invalid trailer")
        elif state == TRAILER_LF or state == LAST_LF:
            if c != 0x0A:
                raise ValueError("expected LF after trailer")
            self.state = TRAILER if state == TRAILER_LF else END
        return 0


cdef Py_ssize_t *_more_room(Py_ssize_t *pieces, Py_ssize_t *on_stack, Py_ssize_t room) except NULL:
    """Room for twice ``room`` pieces, the ones so far kept (``pieces`` freed unless on the stack)."""
    cdef Py_ssize_t *more = <Py_ssize_t *>malloc(4 * room * sizeof(Py_ssize_t))
    if more == NULL:
        raise MemoryError()
    memcpy(more, pieces, 2 * room * sizeof(Py_ssize_t))
    if pieces != on_stack:
        free(pieces)
    return more


cdef bytes _joined(const unsigned char *p, const Py_ssize_t *pieces, Py_ssize_t count, Py_ssize_t total):
    """The ``count`` pieces of ``p`` (offset, length) one after another: ``total`` bytes, one copy."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char *at = PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    for k in range(count):
        memcpy(at, p + pieces[2 * k], pieces[2 * k + 1])
        at += pieces[2 * k + 1]
    return out


cdef inline int _hex_digit(unsigned char c):
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x61 <= c <= 0x66:
        return c - 0x61 + 10
    if 0x41 <= c <= 0x46:
        return c - 0x41 + 10
    return -1


# the Date field, written once a second: "Date: Wed, 02 Dec 2026 13:13:46 GMT" CR LF (aiohttp's format)
cdef time_t _date_second = -1
cdef char _date_field[37]
cdef const char *_WEEKDAYS = b"SunMonTueWedThuFriSat"
cdef const char *_MONTHS = b"JanFebMarAprMayJunJulAugSepOctNovDec"


cdef const char *_date_now() except NULL:
    """The Date field of now, as aiohttp writes it (``int(time.time())``'s second, UTC)."""
    global _date_second
    cdef time_t now = time(NULL)
    cdef tm parts
    if now == _date_second:
        return _date_field
    if gmtime_r(&now, &parts) == NULL or not 0 <= parts.tm_year + 1900 <= 9999:
        raise ValueError(f"cannot write {now} as an HTTP date")
    memcpy(_date_field, b"Date: ", 6)
    memcpy(_date_field + 6, _WEEKDAYS + 3 * parts.tm_wday, 3)
    memcpy(_date_field + 9, b", ", 2)
    fi_two_digits(_date_field + 11, parts.tm_mday)
    _date_field[13] = b' '
    memcpy(_date_field + 14, _MONTHS + 3 * parts.tm_mon, 3)
    _date_field[17] = b' '
    fi_year(_date_field + 18, parts.tm_year + 1900)
    _date_field[22] = b' '
    fi_clock(_date_field + 23, parts.tm_hour, parts.tm_min, parts.tm_sec)
    memcpy(_date_field + 31, b" GMT\r\n", 6)
    _date_second = now
    return _date_field


cdef enum:
    DATE_FIELD_SIZE = 37
    MOST_LEADING = 8         # leading fields an answer may have
    NUMBER_ROOM = 32         # a "%.3f" of a double below 1e20 in size, or an int's decimal


def answer_head(bytes status_line not None, headers, bytes tail not None, Py_ssize_t length, bint keep_alive,
                tuple names=(), tuple values=(), bint dated=False):
    """An HTTP/1.1 answer's head: ``status_line``; each of ``names`` (encoded, its ``": "``
    included; at most eight) with the value at the same index of ``values`` — a string (UTF-8),
    an int (its decimal) or a float below 1e20 in size (three decimals, as ``f"{value:.3f}"``);
    each of ``headers`` (a mapping or a multidict of strings, UTF-8 encoded) as ``name: value``;
    ``tail`` (fields ending in CR LF); when ``dated``, ``Date`` (now, as aiohttp writes it, made
    once a second); ``Content-Length`` unless ``length`` is negative; ``Connection: close`` unless
    ``keep_alive``; the empty line. A control character other than tab in a name or value is a
    ``ValueError`` (header injection), as aiohttp refuses it. The leading fields spare the caller
    a dict and the formatting of its numbers on every answer; ``headers`` must not repeat their
    names."""
    cdef list items = list(headers.items()) if headers else None
    cdef Py_ssize_t size = PyBytes_GET_SIZE(status_line) + PyBytes_GET_SIZE(tail) + 2
    cdef Py_ssize_t n, i, count = len(names)
    cdef const char *s
    cdef char number[24]
    cdef char numbers[MOST_LEADING][NUMBER_ROOM]   # each leading number's text, made while sizing
    cdef Py_ssize_t number_sizes[MOST_LEADING]
    cdef int digits = 0
    cdef char *out
    if len(values) != count:
        raise ValueError("answer_head: one value per leading name")
    if count > MOST_LEADING:
        raise ValueError(f"answer_head: at most {MOST_LEADING} leading fields")
    for i in range(count):
        size += _field_name_size(<bytes?>names[i]) + 2
        number_sizes[i] = _number_text(values[i], numbers[i])
        size += number_sizes[i] if number_sizes[i] >= 0 else _utf8_size(values[i])
    if items is not None:
        for name, value in items:
            size += _utf8_size(name) + _utf8_size(value) + 4
    if dated:
        size += DATE_FIELD_SIZE
    if length >= 0:
        digits = fi_decimal(number, length)
        size += 18 + digits          # "Content-Length: " and CR LF
    if not keep_alive:
        size += 19
    head = PyBytes_FromStringAndSize(NULL, size)
    out = PyBytes_AS_STRING(head)
    out = _put(out, PyBytes_AS_STRING(status_line), PyBytes_GET_SIZE(status_line))
    for i in range(count):
        name = names[i]
        out = _put(out, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        if number_sizes[i] >= 0:
            out = _put(out, numbers[i], number_sizes[i])
        else:
            s = PyUnicode_AsUTF8AndSize(values[i], &n)
            out = _put(out, s, n)
        out = _put(out, "\r\n", 2)
    if items is not None:
        for name, value in items:
            s = PyUnicode_AsUTF8AndSize(name, &n)
            out = _put(out, s, n)
            out = _put(out, ": ", 2)
            s = PyUnicode_AsUTF8AndSize(value, &n)
            out = _put(out, s, n)
            out = _put(out, "\r\n", 2)
    out = _put(out, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail))
    if dated:
        out = _put(out, _date_now(), DATE_FIELD_SIZE)
    if length >= 0:
        out = _put(out, "Content-Length: ", 16)
        out = _put(out, number, digits)
        out = _put(out, "\r\n", 2)
    if not keep_alive:
        out = _put(out, "Connection: close\r\n", 19)
    _put(out, "\r\n", 2)
    return head


cdef Py_ssize_t _field_name_size(bytes name) except -1:
    """The size of a leading field's name (``b"x-id: "``), which must hold no control character."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    if _may_hold_control(<const unsigned char *>PyBytes_AS_STRING(name), n):
        raise ValueError("Forbidden control character in an answer's headers")
    return n


cdef Py_ssize_t _number_text(object value, char *out) except -2:
    """A leading value that is a number, written into ``out`` (``NUMBER_ROOM`` bytes): its size;
    -1 for a string (written as it is); any other value is a ``TypeError``."""
    cdef char *text
    cdef Py_ssize_t n
    if PyUnicode_CheckExact(value):
        return -1
    if PyLong_CheckExact(value):
        return fi_decimal(out, PyLong_AsLongLong(value))      # an OverflowError past 64 bits
    if PyFloat_CheckExact(value):
        if not -1e20 < PyFloat_AS_DOUBLE(value) < 1e20:       # and not a NaN
            raise ValueError("answer_head: a leading float is out of range")
        text = PyOS_double_to_string(PyFloat_AS_DOUBLE(value), b'f', 3, 0, NULL)
        n = strlen(text)
        memcpy(out, text, n)
        PyMem_Free(text)
        return n
    raise TypeError(f"a leading field's value must be a str, an int or a float, not {type(value).__name__}")


cdef Py_ssize_t _utf8_size(object text) except -1:
    """The UTF-8 size of a header's name or value, which must be a string without control characters."""
    cdef Py_ssize_t n, i
    cdef const unsigned char *s
    if not isinstance(text, str):
        raise TypeError(f"a header's name and value must be strings, not {type(text).__name__}")
    s = <const unsigned char *>PyUnicode_AsUTF8AndSize(text, &n)
    if _may_hold_control(s, n):      # a tab, most likely: looked at byte by byte
        for i in range(n):
            if (s[i] < 0x20 and s[i] != 0x09) or s[i] == 0x7F:
                raise ValueError("Forbidden control character in an answer's headers")
    return n


cdef inline bint _may_hold_control(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """Does ``s[:n]`` hold a byte below 0x20 (a tab among them) or 0x7F? Eight bytes a step (the
    bit tricks of "has a byte less than" and "has a zero byte", exact for whether there is one),
    where a byte loop cost ~8 instructions a byte of every answer's headers."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word, below, deleted
    while i + 8 <= n:
        memcpy(&word, s + i, 8)
        below = (word - 0x2020202020202020ULL) & ~word
        deleted = (word ^ 0x7F7F7F7F7F7F7F7FULL)
        deleted = (deleted - 0x0101010101010101ULL) & ~deleted
        if (below | deleted) & 0x8080808080808080ULL:
            return True
        i += 8
    while i < n:
        if s[i] < 0x20 or s[i] == 0x7F:
            return True
        i += 1
    return False


cdef inline char *_put(char *out, const char *s, Py_ssize_t n):
    memcpy(out, s, n)
    return out + n


cdef const char *_HEX_DIGITS = b"0123456789abcdef"


cdef inline int _put_hex(char *digits, size_t size) noexcept:
    """``size`` in lowercase hex, its digits at the end of the 16 bytes ``digits``; their count."""
    cdef int k = 16
    while True:         # last digit first; at least one ("0" for an empty chunk)
        k -= 1
        digits[k] = _HEX_DIGITS[size & 15]
        size >>= 4
        if size == 0:
            return 16 - k


cpdef bytes framed_chunk(bytes data, bytes after):
    """``data`` as one chunk of a chunked body (its size in hex, CR LF, the data, CR LF), then
    ``after`` (the last chunk, when the stream ends with it): one allocation, run for every chunk
    a stream relays, where a bytes format (``b"%x\\r\\n%b\\r\\n" % (len(data), data)``) parsed its
    format and made an int's text each time. (``cpdef``: the client's stream calls it on every
    chunk, a C call.)"""
    if data is None or after is None:
        raise TypeError("framed_chunk takes bytes, not None")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), rest = PyBytes_GET_SIZE(after)
    cdef char digits[16]
    cdef int k = _put_hex(digits, <size_t>n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, k + 2 + n + 2 + rest)
    cdef char *at = _put(PyBytes_AS_STRING(out), digits + 16 - k, k)
    at = _put(at, b"\r\n", 2)
    at = _put(at, PyBytes_AS_STRING(data), n)
    at = _put(at, b"\r\n", 2)
    _put(at, PyBytes_AS_STRING(after), rest)
    return out


def chunk_size_line(Py_ssize_t size):
    """A chunk's size line (hex, CR LF) alone, for a writer that joins the chunk's pieces itself."""
    if size < 0:
        raise ValueError("a chunk's size cannot be negative")
    cdef char digits[18]
    cdef int k = _put_hex(digits, <size_t>size)
    digits[16] = b"\r"
    digits[17] = b"\n"
    return PyBytes_FromStringAndSize(digits + 16 - k, k + 2)
