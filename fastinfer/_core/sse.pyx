# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""SSE (Server-Sent Events) parser and writer, compiled: runs on every streamed
byte of every provider stream.

Owns: the WHATWG event-stream interpretation
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
of a byte stream fed in arbitrary pieces (``SSEParser``, ``Event``), and the
encoding of events into that format (``encode_event``, ``encode_data``), and
``plain_prefix``: how far a read of whole events can be forwarded without
parsing, so a relay splits into events only what it must read; and
``whole_events``: a read cut after its last whole event (a relay's first step
on every read of a stream).

Must not touch: HTTP, asyncio, JSON. It sees bytes and returns ``Event``
objects; what a ``data`` payload means (JSON, ``[DONE]``) is the caller's
business.

Same API and behaviour as the reference ``fastinfer._core.ref.sse`` (see its
docstring for the details beyond the spec text). How it is fast: the parser
scans each chunk in place with C pointers (``memchr`` for CR and LF, each
searched at most once per position), copies only a partial line at the end of
a chunk into a small carry buffer, accumulates ``data`` values in a C buffer,
and creates Python objects only per dispatched event (the data ``bytes``, the
``Event``; the event type ``str`` is cached, the id ``str`` made per ``id``
line).
"""
cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy, memset


__all__ = ["Event", "SSEParser", "encode_event", "encode_data", "first_marker", "plain_prefix", "whole_events"]

cdef enum:
    NUL = 0
    LF = 10
    CR = 13
    SPACE = 32
    COLON = 58
    DIGIT_0 = 48
    DIGIT_9 = 57
    _KEEP_CAP = 65536   # buffers larger than this are freed when a stream ends

cdef const unsigned char* _BOM = b"\xef\xbb\xbf"
cdef str _MESSAGE = "message"


# ---------------------------------------------------------------- byte buffer

# ``Buf`` (a pointer, its length and its capacity): in sse.pxd


cdef int _buf_grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.n + extra
    cdef Py_ssize_t cap = b.cap if b.cap else 256
    cdef char* np
    while cap < need:
        cap *= 2
    np = <char*>realloc(b.p, <size_t>cap)
    if np == NULL:
        raise MemoryError()
    b.p = np
    b.cap = cap
    return 0


cdef inline int _buf_append(Buf* b, const char* s, Py_ssize_t k) except -1:
    if b.n + k > b.cap:
        _buf_grow(b, k)
    if k:
        memcpy(b.p + b.n, s, <size_t>k)
        b.n += k
    return 0


cdef inline void _buf_reset(Buf* b) noexcept:
    b.n = 0
    if b.cap > _KEEP_CAP:
        free(b.p)
        b.p = NULL
        b.cap = 0


# ---------------------------------------------------------------------- event

@cython.final
@cython.no_gc
@cython.freelist(64)
cdef class Event:
    """One dispatched event: ``event`` type, ``data`` bytes, ``id`` (last event
    ID in effect, or None), ``retry`` (set by this event's block, or None).

    Not tracked by the cyclic GC (its fields are str, bytes, int or None, so it
    cannot be part of a cycle): allocating one per event never triggers a
    collection."""

    def __init__(self, str event not None="message", bytes data not None=b"",
                 id=None, retry=None):
        if id is not None and not isinstance(id, str):
            raise TypeError(f"id must be str or None, not {type(id).__name__}")
        if retry is not None and not isinstance(retry, int):
            raise TypeError(f"retry must be int or None, not {type(retry).__name__}")
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def __repr__(self):
        return (f"Event(event={self.event!r}, data={self.data!r}, "
                f"id={self.id!r}, retry={self.retry!r})")

    def __eq__(self, other):
        if type(other) is not Event:
            return NotImplemented
        cdef Event o = <Event>other
        return (self.event == o.event and self.data == o.data
                and self.id == o.id and self.retry == o.retry)

    def __hash__(self):
        return hash((self.event, self.data, self.id, self.retry))


# --------------------------------------------------------------------- parser

@cython.final
cdef class SSEParser:
    """Incremental WHATWG event-stream parser; feed it bytes, get events. (Its fields: in sse.pxd.)"""

    def __cinit__(self):
        self._carry.p = NULL
        self._carry.n = self._carry.cap = 0
        self._data.p = NULL
        self._data.n = self._data.cap = 0
        self._etype.p = NULL
        self._etype.n = self._etype.cap = 0

    def __dealloc__(self):
        free(self._carry.p)
        free(self._data.p)
        free(self._etype.p)

    def __init__(self):
        self.last_event_id = ""
        self.reconnection_time = None
        self._new_stream()

    cdef void _new_stream(self):
        # a huge line or event must not pin its buffer for the parser's lifetime
        _buf_reset(&self._carry)
        _buf_reset(&self._data)
        _buf_reset(&self._etype)
        self._skip_lf = False
        self._bom = 0
        self._id_buffer = None
        self._block_retry = None

    def feed(self, chunk) -> list:
        """Parse ``chunk``; return the events it completed, in order."""
        cdef bytes b
        cdef list out = []
        cdef const char* p
        cdef Py_ssize_t n, i = 0, k
        if PyBytes_CheckExact(chunk):
            b = <bytes>chunk
        else:
            b = bytes(memoryview(chunk))
        p = PyBytes_AS_STRING(b)
        n = PyBytes_GET_SIZE(b)
        if self._bom < 3:
            while self._bom < 3:
                if i == n:
                    return out  # could still become a BOM
                if <unsigned char>p[i] == _BOM[self._bom]:
                    self._bom += 1
                    i += 1
                else:
                    # not a BOM: the bytes matched so far were data
                    k = self._bom
                    self._bom = 3
                    if k:
                        self._parse(<const char*>_BOM, k, out)
            p += i
            n -= i
        self._parse(p, n, out)
        return out

    def close(self) -> list:
        """End of stream: a pending partial line or event is discarded."""
        self._new_stream()
        return []

    cdef int _parse(self, const char* p, Py_ssize_t n, list out) except -1:
        cdef Py_ssize_t pos = 0, end, lf = -1, cr = -1
        cdef const char* q
        if n == 0:
            return 0
        if self._skip_lf:
            self._skip_lf = False
            if p[0] == LF:
                pos = 1
        while pos < n:
            if lf < pos:
                q = <const char*>memchr(p + pos, LF, <size_t>(n - pos))
                lf = q - p if q != NULL else n
            if cr < pos:
                q = <const char*>memchr(p + pos, CR, <size_t>(n - pos))
                cr = q - p if q != NULL else n
            end = lf if lf < cr else cr
            if end == n:
                _buf_append(&self._carry, p + pos, n - pos)
                return 0
            if self._carry.n:
                _buf_append(&self._carry, p + pos, end - pos)
                self._line(self._carry.p, self._carry.n, out)
                self._carry.n = 0
            else:
                self._line(p + pos, end - pos, out)
            if p[end] == CR:
                if end + 1 == n:
                    self._skip_lf = True
                    return 0
                pos = end + 2 if p[end + 1] == LF else end + 1
            else:
                pos = end + 1
        return 0

    cdef int _line(self, const char* p, Py_ssize_t n, list out) except -1:
        cdef const char* v
        cdef Py_ssize_t flen, vlen
        if n == 0:
            return self._dispatch(out)
        if p[0] == COLON:
            return 0  # comment
        v = <const char*>memchr(p, COLON, <size_t>n)
        if v != NULL:
            flen = v - p
            v += 1
            vlen = n - flen - 1
            if vlen and v[0] == SPACE:
                v += 1
                vlen -= 1
        else:
            flen = n
            v = p + n
            vlen = 0
        if flen == 4:
            if memcmp(p, b"data", 4) == 0:
                if self._data.n + vlen + 1 > self._data.cap:
                    _buf_grow(&self._data, vlen + 1)
                if vlen:
                    memcpy(self._data.p + self._data.n, v, <size_t>vlen)
                self._data.p[self._data.n + vlen] = LF
                self._data.n += vlen + 1
        elif flen == 5:
            if memcmp(p, b"event", 5) == 0:
                self._etype.n = 0
                _buf_append(&self._etype, v, vlen)
            elif memcmp(p, b"retry", 5) == 0:
                self._retry(v, vlen)
        elif flen == 2:
            if p[0] == c'i' and p[1] == c'd':
                if vlen == 0 or memchr(v, NUL, <size_t>vlen) == NULL:
                    self._id_buffer = PyUnicode_DecodeUTF8(v, vlen, "replace")
        return 0

    cdef int _retry(self, const char* v, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        cdef long long x = 0
        cdef object value
        if n == 0:
            return 0
        for i in range(n):
            if v[i] < DIGIT_0 or v[i] > DIGIT_9:
                return 0
        if n <= 18:
            for i in range(n):
                x = x * 10 + (v[i] - DIGIT_0)
            value = x
        else:
            try:
                value = int(PyBytes_FromStringAndSize(v, n))
            except ValueError:  # longer than sys.get_int_max_str_digits()
                return 0
        self._block_retry = value
        self.reconnection_time = value
        return 0

    cdef str _event_type(self):
        cdef bytes cb = self._etype_cache_b
        cdef Py_ssize_t n = self._etype.n
        if (cb is not None and PyBytes_GET_SIZE(cb) == n
                and memcmp(PyBytes_AS_STRING(cb), self._etype.p, <size_t>n) == 0):
            return self._etype_cache_s
        s = PyUnicode_DecodeUTF8(self._etype.p, n, "replace")
        self._etype_cache_b = PyBytes_FromStringAndSize(self._etype.p, n)
        self._etype_cache_s = s
        return s

    cdef int _dispatch(self, list out) except -1:
        cdef Event ev
        cdef object retry = self._block_retry
        self._block_retry = None
        self.last_event_id = self._id_buffer if self._id_buffer is not None else ""
        if self._data.n == 0:
            self._etype.n = 0
            return 0
        ev = Event.__new__(Event)
        # the data buffer always ends with the LF appended after the last value
        ev.data = PyBytes_FromStringAndSize(self._data.p, self._data.n - 1)
        self._data.n = 0
        if self._etype.n:
            ev.event = self._event_type()
            self._etype.n = 0
        else:
            ev.event = _MESSAGE
        ev.id = self._id_buffer
        ev.retry = retry
        out.append(ev)
        return 0


# --------------------------------------------------------------------- writer

cdef bytes _check_field(str name, object value):
    if type(value) is not bytes and not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    cdef bytes b = <bytes>value
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    cdef const char* p = PyBytes_AS_STRING(b)
    if memchr(p, LF, <size_t>n) != NULL or memchr(p, CR, <size_t>n) != NULL:
        raise ValueError(f"{name} must not contain a line break")
    return b


cdef inline char* _put(char* w, const char* s, Py_ssize_t k) noexcept:
    memcpy(w, s, <size_t>k)
    return w + k


cdef bytes _encode(bytes data, bytes event, bytes id):
    cdef const char* d = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t lines = 1, termbytes = 0, i = 0, j, size = 0
    cdef bint breaks
    cdef bytes res
    cdef char* w
    breaks = memchr(d, LF, <size_t>n) != NULL or memchr(d, CR, <size_t>n) != NULL
    if breaks:
        while i < n:
            if d[i] == CR:
                lines += 1
                if i + 1 < n and d[i + 1] == LF:
                    termbytes += 2
                    i += 2
                    continue
                termbytes += 1
            elif d[i] == LF:
                lines += 1
                termbytes += 1
            i += 1
    if event is not None:
        size += 8 + PyBytes_GET_SIZE(event)           # "event: " x "\n"
    if id is not None:
        size += 5 + PyBytes_GET_SIZE(id)              # "id: " x "\n"
    size += n - termbytes + 7 * lines + 1             # "data: " line "\n" ... "\n"
    res = PyBytes_FromStringAndSize(NULL, size)
    w = PyBytes_AS_STRING(res)
    if event is not None:
        w = _put(w, "event: ", 7)
        w = _put(w, PyBytes_AS_STRING(event), PyBytes_GET_SIZE(event))
        w[0] = LF
        w += 1
    if id is not None:
        w = _put(w, "id: ", 4)
        w = _put(w, PyBytes_AS_STRING(id), PyBytes_GET_SIZE(id))
        w[0] = LF
        w += 1
    if not breaks:
        w = _put(w, "data: ", 6)
        w = _put(w, d, n)
        w[0] = LF
        w += 1
    else:
        i = 0
        while True:
            j = i
            while j < n and d[j] != LF and d[j] != CR:
                j += 1
            w = _put(w, "data: ", 6)
            w = _put(w, d + i, j - i)
            w[0] = LF
            w += 1
            if j == n:
                break
            i = j + 2 if (d[j] == CR and j + 1 < n and d[j + 1] == LF) else j + 1
    w[0] = LF
    return res


def encode_event(data, event=None, id=None) -> bytes:
    """Encode one event: optional ``event:`` and ``id:`` lines, one ``data:``
    line per line of ``data`` (split on LF, CRLF and CR), then a blank line."""
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    cdef bytes ev = None, ib = None
    if event is not None:
        ev = _check_field("event", event)
    if id is not None:
        ib = _check_field("id", id)
        if memchr(PyBytes_AS_STRING(ib), NUL, <size_t>PyBytes_GET_SIZE(ib)) != NULL:
            raise ValueError("id must not contain NUL")
    return _encode(<bytes>data, ev, ib)


def encode_data(data) -> bytes:
    """Encode a data-only event (the common streaming case):
    ``b"data: " + data + b"\\n\\n"`` when ``data`` has no line break."""
    cdef const char* d
    cdef Py_ssize_t n
    cdef bytes res
    cdef char* w
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    d = PyBytes_AS_STRING(data)
    n = PyBytes_GET_SIZE(data)
    if memchr(d, LF, <size_t>n) != NULL or memchr(d, CR, <size_t>n) != NULL:
        return _encode(<bytes>data, None, None)
    res = PyBytes_FromStringAndSize(NULL, n + 8)
    w = PyBytes_AS_STRING(res)
    memcpy(w, "data: ", 6)
    memcpy(w + 6, d, <size_t>n)
    w[n + 6] = LF
    w[n + 7] = LF
    return res


cdef extern from "find.h" nogil:
    const char *fi_find_any(const char *haystack, size_t haystacklen, const char *const *needles,
                            const size_t *lengths, int count)
    const char *fi_find_any_using(const char *haystack, size_t haystacklen, const char *const *needles,
                                  const size_t *lengths, int count, int wide)
    int fi_has_avx2()

#: the marker search steps 32 positions at a time (AVX2) on this CPU, else 16 (SSE2)
WIDE_MARKER_SEARCH = bool(fi_has_avx2())


cdef enum:
    _MAX_MARKERS = 8


cpdef tuple plain_prefix(bytes events, tuple markers, Py_ssize_t offset=0):
    """``(end, data_lines)``: ``end`` is the offset just past the leading events of ``events[offset:]`` that
    a relay may forward unparsed: each ends in ``"}\\n\\n"`` (a JSON object's end, then the
    blank line) and holds none of ``markers`` (at most 8, non-empty bytes without a line feed);
    ``data_lines`` counts the lines of ``events[offset:end]`` that start with ``data:``. (``offset``, an
    event's start, lets a relay go on past an event it read without copying the rest of the read.)

    The markers are looked for in one pass over the whole read (``find.h``'s ``fi_find_any``: at
    each step of 32 positions with AVX2, else 16, every marker's first byte and one more), not per
    event, not a pass a marker, and not byte by byte: a marker holds no line feed, so the first one found lies inside exactly one
    event, and every event before that one is plain. Then the lines are walked from
    line feed to line feed (``memchr``). (A byte loop that looked at every quote for a marker cost
    ~4 ns a byte: JSON is a fifth quotes.)
    """
    if events is None or markers is None:
        raise TypeError("plain_prefix takes bytes and a tuple, not None")
    if offset < 0 or offset > PyBytes_GET_SIZE(events):
        raise ValueError("offset out of range")
    cdef const char* s = PyBytes_AS_STRING(events) + offset
    cdef const char* end = PyBytes_AS_STRING(events) + PyBytes_GET_SIZE(events)
    cdef Py_ssize_t n = end - s
    cdef Py_ssize_t count = len(markers), marker_at = n, start = 0, lines = 0, event_lines
    cdef const char* found
    cdef const char* at
    cdef const char* stop
    cdef const char* needles[_MAX_MARKERS]
    cdef size_t lengths[_MAX_MARKERS]
    _markers(markers, needles, lengths)
    found = fi_find_any(s, <size_t>n, needles, lengths, <int>count)
    if found != NULL:
        marker_at = found - s
    event_lines = _starts_data(s, end)
    at = s
    while True:
        stop = <const char*>memchr(at, LF, <size_t>(end - at))
        if stop == NULL or stop + 1 == end:
            break
        at = stop + 1
        if at[0] != LF:
            event_lines += _starts_data(at, end)
            continue
        # a blank line: the event [start, stop) is whole
        if stop == s + start or (stop - 1)[0] != b"}" or marker_at < stop - s:
            break
        lines += event_lines
        start = stop - s + 2
        at = s + start
        event_lines = _starts_data(at, end)
    return offset + start, lines


# the last markers checked, and what they gave: a relay passes the same tuple with every read
cdef tuple _checked_markers = None
cdef const char *_checked_needles[_MAX_MARKERS]
cdef size_t _checked_lengths[_MAX_MARKERS]


cdef int _markers(tuple markers, const char **needles, size_t *lengths) except -1:
    """``markers`` checked (at most 8, non-empty bytes without a line feed) into ``needles`` and
    ``lengths``; the same tuple as last time is not checked again (the module holds it, so its bytes
    stay where the pointers say)."""
    global _checked_markers
    cdef Py_ssize_t k
    cdef object marker
    if markers is _checked_markers:
        memcpy(needles, _checked_needles, sizeof(_checked_needles))
        memcpy(lengths, _checked_lengths, sizeof(_checked_lengths))
        return 0
    if len(markers) > _MAX_MARKERS:
        raise ValueError(f"at most {_MAX_MARKERS} markers")
    for k in range(len(markers)):
        marker = markers[k]
        if not PyBytes_CheckExact(marker) or PyBytes_GET_SIZE(marker) == 0:
            raise TypeError("markers must be non-empty bytes")
        if memchr(PyBytes_AS_STRING(marker), LF, <size_t>PyBytes_GET_SIZE(marker)) != NULL:
            raise ValueError("a marker must not hold a line feed")
        needles[k] = PyBytes_AS_STRING(marker)
        lengths[k] = <size_t>PyBytes_GET_SIZE(marker)
    memcpy(_checked_needles, needles, len(markers) * sizeof(const char *))
    memcpy(_checked_lengths, lengths, len(markers) * sizeof(size_t))
    _checked_markers = markers
    return 0


def first_marker(bytes events, tuple markers, bint wide=True) -> int:
    """Where the first of ``markers`` starts in ``events`` (-1: none), as ``plain_prefix`` finds
    it: 32 positions a step where the CPU has AVX2 and ``wide``, else 16 (the tests ask for both)."""
    cdef const char* needles[_MAX_MARKERS]
    cdef size_t lengths[_MAX_MARKERS]
    _markers(markers, needles, lengths)
    cdef const char *s = PyBytes_AS_STRING(events)
    cdef const char *found = fi_find_any_using(s, <size_t>PyBytes_GET_SIZE(events), needles, lengths,
                                               <int>len(markers), wide)
    return -1 if found == NULL else found - s


cdef inline int _starts_data(const char* at, const char* end) noexcept nogil:
    return end - at >= 5 and memcmp(at, b"data:", 5) == 0


# ------------------------------------------------------------ whole_events


cpdef tuple whole_events(bytes carry, bytes chunk):
    """``(events, rest)``: what has arrived (``carry``, then ``chunk``) split into its whole SSE
    events and the partial one to carry to the next read. An event ends at the last ``"\\n\\n"``,
    ``"\\r\\n\\r\\n"`` or ``"\\r\\r"``; relays forward only whole events, so that an error event
    can always be appended cleanly. One call per read instead of two Python ones."""
    if carry is None or chunk is None:
        raise TypeError("whole_events takes bytes, not None")
    cdef bytes buf = carry + chunk if PyBytes_GET_SIZE(carry) else chunk
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t end = _last_event_end(PyBytes_AS_STRING(buf), n)
    if end == n:
        return buf, b""
    return buf[:end], buf[end:]


cdef Py_ssize_t _last_event_end(const char* s, Py_ssize_t n) noexcept nogil:
    """The offset just past the last blank line (0 if none): walked back from the end, the first
    offset where ``LF LF``, ``CR CR`` or ``CR LF CR LF`` ends is the greatest (a read of whole
    events ends with one: found at once)."""
    cdef Py_ssize_t i = n
    cdef char last, before
    while i >= 2:
        last = s[i - 1]
        before = s[i - 2]
        if last == before and (last == LF or last == CR):
            return i
        if last == LF and before == CR and i >= 4 and s[i - 3] == LF and s[i - 4] == CR:
            return i
        i -= 1
    return 0
