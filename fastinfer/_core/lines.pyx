# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A log line of plain values, written in one pass: every access-log line, a JSON object or ``key=value`` pairs.

Owns: ``json_line(head, keys, values, millis)``: ``head`` (the line up to its first field: the
opening brace and the envelope, ``{"ts":…,"pid":…,``), then each ``keys[i]`` (an encoded
``"name":``) with ``values[i]`` rendered byte for byte as orjson renders it — ``null``, ``true`` /
``false``, an integer (64-bit, as orjson takes them), a float as its shortest round trip (orjson's
notation: ``0.00001``, ``1.5e-6``, ``1e+16``; NaN and infinities ``null``), a string UTF-8 with
orjson's escapes — then the closing brace and a newline. A value whose bit is set in ``millis`` is
seconds written as milliseconds to 3 decimals (``int(s * 1e6 + 0.5) / 1000``). Anything else (a
type orjson would need its own rules for, a string that is not valid UTF-8, an integer past 64
bits) raises, and the caller makes that line the other way.

``stamped_line(created, envelope, keys, values, millis)``: the same line with its head written
here — ``{"ts":"`` and ``created`` (Unix seconds) as ISO 8601 UTC with milliseconds, as
``observe.logs`` writes every line's, then ``envelope`` (``",…,``, the rest of the head) — the part
up to the second formatted once a second.

``logfmt_line(head, keys, values, millis)``: the text format's line, as ``observe.logs.TextFormatter``
writes it: ``head``, then ``keys[i]`` (an encoded ``name=``) with ``values[i]`` as ``logfmt`` renders
it — ``-`` for None, ``true`` / ``false``, an integer's digits, a float's ``repr``, a string bare when it
is one or more of ``A-Za-z0-9_-./:@+``, else quoted as orjson quotes it — the pairs separated by a
space, then a newline. A string with a non-ASCII character (whose bareness is Unicode's ``\w``), an
integer past 64 bits or a subclass of int or float raises: the caller makes that line the other way.
``stamped_line`` and ``stamped_lines`` write it with ``text=True``: the head is then the bare
timestamp, and ``envelope`` the rest (`` INFO fastinfer.access[4242]: ``).

Why: the access log's flush built a dict of sixteen fields per line and handed it to orjson; the
dict's construction cost more than the line. Must not touch: which fields a line has or what they
mean (``observe.access``), logging. The reference is ``ref/lines.py`` (orjson itself).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Check, PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_Check, PyLong_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport fabs, isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, strchr, strlen
from libc.time cimport gmtime_r, time_t, tm


cdef extern from "decimal.h":
    int fi_decimal(char *out, long long n) nogil
    void fi_two_digits(char *out, int n) nogil
    void fi_year(char *out, int year) nogil
    void fi_clock(char *out, int hour, int minute, int second) nogil

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL
    void PyMem_Free(void *p)
    int Py_DTSF_ADD_DOT_0
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    long long PyLong_AsLongLongAndOverflow(object n, int *overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object n) except? -1
    bint PyBool_Check(object o)


cdef char *_HEX = b"0123456789abcdef"
# the letter after the backslash of each control byte's escape (orjson's): u for \u00XX
cdef char *_CONTROL_ESCAPES = b"uuuuuuuubtnufruuuuuuuuuuuuuuuuuu"
cdef Py_ssize_t _MOST_FOR_A_NUMBER = 32     # a float's repr is at most 24 bytes, an int's 21
# the ASCII bytes a logfmt string may have unquoted (``observe.logs._bare``: ``[\w\-./:@+]``)
cdef bint _LOGFMT_BARE[128]
cdef const unsigned char *_BARE_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:@+"
cdef Py_ssize_t _i
for _i in range(<Py_ssize_t>strlen(<const char *>_BARE_BYTES)):
    _LOGFMT_BARE[_BARE_BYTES[_i]] = True


cdef Py_ssize_t _most_bytes(value) except -1:
    """At most how many bytes ``_put_value`` writes for ``value`` (a line is allocated once)."""
    cdef Py_ssize_t n
    if PyUnicode_CheckExact(value):
        PyUnicode_AsUTF8AndSize(value, &n)     # kept by the str: the write reads it again for free
        return 6 * n + 2                       # every byte \u00XX, and the quotes
    return _MOST_FOR_A_NUMBER                  # null, true, false, a number (anything else raises)


cdef char *_put_str(char *out, str text) except NULL:
    """A JSON string as orjson writes it: ``"`` and ``\\`` escaped, control characters as \\b \\t
    \\n \\f \\r or \\u00XX, everything else (non-ASCII too) as its UTF-8."""
    cdef Py_ssize_t n, i
    cdef const char *s = PyUnicode_AsUTF8AndSize(text, &n)   # raises on a lone surrogate, as orjson does
    cdef unsigned char c
    cdef char letter
    out[0] = b'"'
    out += 1
    for i in range(n):
        c = <unsigned char>s[i]
        if c >= 0x20 and c != b'"' and c != b'\\':
            out[0] = <char>c
            out += 1
            continue
        out[0] = b'\\'
        letter = <char>c if c >= 0x20 else _CONTROL_ESCAPES[c]
        out[1] = letter
        if letter != b'u':
            out += 2
            continue
        out[2] = b'0'
        out[3] = b'0'
        out[4] = _HEX[c >> 4]
        out[5] = _HEX[c & 15]
        out += 6
    out[0] = b'"'
    return out + 1


cdef char *_put_float(char *out, double value) except NULL:
    """A float as orjson writes it: Python's shortest round trip (``repr``), but ``null`` for NaN and
    the infinities, an exponent without padding (``1.5e-6``, ``1e+16``), and ten to the minus five in
    positional notation (``0.000015``)."""
    cdef char *text
    cdef char *e
    cdef char *m
    cdef int exponent
    cdef Py_ssize_t k
    if not isfinite(value):
        memcpy(out, b"null", 4)
        return out + 4
    text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        e = strchr(text, b'e')
        if e == NULL:
            k = strlen(text)
            memcpy(out, text, k)
            return out + k
        exponent = int(e[1:].decode("ascii"))   # rare: very small or very large values only
        m = text
        if exponent == -5:                      # orjson writes 1e-5 <= |v| < 1e-4 positionally
            if m[0] == b'-':
                out[0] = b'-'
                out += 1
                m += 1
            memcpy(out, b"0.0000", 6)
            out += 6
            for k in range(e - m):
                if m[k] != b'.':
                    out[0] = m[k]
                    out += 1
            return out
        memcpy(out, text, e - text)
        out += e - text
        memcpy(out, b"e-" if exponent < 0 else b"e+", 2)
        return out + 2 + fi_decimal(out + 2, exponent if exponent >= 0 else -exponent)
    finally:
        PyMem_Free(text)


cdef char *_put_int(char *out, value) except NULL:
    cdef int overflow = 0
    cdef long long n = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long u = 0
    cdef char digits[24]
    cdef int k = 0
    if overflow == 0:
        return out + fi_decimal(out, n)
    if overflow > 0:
        try:
            u = PyLong_AsUnsignedLongLong(value)    # orjson takes up to 2**64 - 1
        except OverflowError:
            overflow = -1
    if overflow < 0:
        raise TypeError("Integer exceeds 64-bit range")      # orjson's JSONEncodeError is a TypeError
    while True:
        digits[k] = <char>(48 + u % 10)     # '0'
        k += 1
        u //= 10
        if u == 0:
            break
    while k:
        k -= 1
        out[0] = digits[k]
        out += 1
    return out


cdef char *_put_millis(char *out, value, bint text) except NULL:
    """Seconds as milliseconds to 3 decimals, as ``int(s * 1e6 + 0.5) / 1000`` gives them (a double
    divided by 1000 is correctly rounded either way: the int is the double's exact value); past where
    the digits are exact, the float as orjson writes it, or with ``text`` as ``repr`` does."""
    cdef double micro = (<double>value) * 1e6 + 0.5
    cdef double millis
    if micro != micro:
        raise ValueError(f"cannot write {value!r} seconds as milliseconds")
    if not isfinite(micro):
        raise OverflowError(f"cannot write {value!r} seconds as milliseconds")
    if fabs(micro) >= 1e15:
        if fabs(micro) >= 9.2e18:       # past int64: Python's int and its correctly rounded division
            millis = int(micro) / 1000
        else:
            millis = <double>(<int64_t>micro) / 1000.0
        return _put_repr(out, millis) if text else _put_float(out, millis)
    return _put_thousandths(out, <int64_t>micro)


cdef char *_put_thousandths(char *out, int64_t n) noexcept:
    """``n / 1000`` as its shortest round trip, from the integer's digits (no float formatting): below
    10**15 two numbers of at most three decimals are never the same double, so the shortest text of
    ``n / 1000`` is ``n``'s digits with the point three from the end, its trailing zeros dropped
    (``1.5``, ``0.001``, ``12.0``)."""
    cdef int64_t whole, part
    if n < 0:
        out[0] = b'-'
        out += 1
        n = -n
    whole = n // 1000
    part = n % 1000
    out += fi_decimal(out, whole)
    out[0] = b'.'
    out[1] = <char>(48 + part // 100)
    if part % 100 == 0:
        return out + 2
    out[2] = <char>(48 + part // 10 % 10)
    if part % 10 == 0:
        return out + 3
    out[3] = <char>(48 + part % 10)
    return out + 4


cdef char *_put_repr(char *out, double value) except NULL:
    """A float as Python's ``str`` writes it (``repr``: ``1.5``, ``1e-05``, ``inf``, ``nan``)."""
    cdef char *text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    cdef Py_ssize_t k = strlen(text)
    memcpy(out, text, k)
    PyMem_Free(text)
    return out + k


cdef char *_put_logfmt_str(char *out, str text) except NULL:
    """A string as ``logfmt`` shows it: bare when it is all ``A-Za-z0-9_-./:@+`` (and not empty), else
    quoted as orjson quotes it. Non-ASCII raises (bareness is then Unicode's ``\\w``: the caller's)."""
    cdef Py_ssize_t n, i
    cdef const unsigned char *s = <const unsigned char *>PyUnicode_AsUTF8AndSize(text, &n)
    cdef bint bare = n > 0
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if c >= 0x80:
            raise ValueError("logfmt_line: a non-ASCII string is the caller's to write")
        if not _LOGFMT_BARE[c]:
            bare = False
    if not bare:
        return _put_str(out, text)
    memcpy(out, s, n)
    return out + n


cdef char *_put_value(char *out, value, bint millis, bint text) except NULL:
    """``value`` as orjson writes it, or with ``text`` as ``logfmt`` shows it (the module)."""
    if value is None:
        if text:
            out[0] = b'-'
            return out + 1
        memcpy(out, b"null", 4)
        return out + 4
    if millis:
        if PyFloat_CheckExact(value) or (PyLong_Check(value) and not PyBool_Check(value)):
            return _put_millis(out, value, text)
        raise TypeError(f"seconds must be a number, not {type(value).__name__}")
    if PyUnicode_CheckExact(value):
        return _put_logfmt_str(out, value) if text else _put_str(out, value)
    if value is True:
        memcpy(out, b"true", 4)
        return out + 4
    if value is False:
        memcpy(out, b"false", 5)
        return out + 5
    if PyLong_CheckExact(value) or (PyLong_Check(value) and not text):   # str() of a subclass is its own
        return _put_int(out, value)
    if PyFloat_CheckExact(value):
        return _put_repr(out, PyFloat_AS_DOUBLE(value)) if text else _put_float(out, PyFloat_AS_DOUBLE(value))
    raise TypeError(f"{'logfmt_line' if text else 'json_line'} writes None, bool, int, float and str, "
                    f"not {type(value).__name__}")


def json_line(bytes head not None, tuple keys not None, tuple values not None, uint64_t millis=0):
    """``head``, then ``keys[i]`` and ``values[i]`` for every i, ``}`` and a newline (see the module)."""
    return _line(PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), NULL, 0, keys, values, millis, False)


def logfmt_line(bytes head not None, tuple keys not None, tuple values not None, uint64_t millis=0):
    """``head``, then ``keys[i]`` and ``values[i]`` in ``logfmt``, space-separated, and a newline (the module)."""
    return _line(PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), NULL, 0, keys, values, millis, True)


cdef bytes _line(const char *head, Py_ssize_t head_size, const char *more, Py_ssize_t more_size, tuple keys,
                 tuple values, uint64_t millis, bint text):
    """The line of ``json_line`` (``logfmt_line`` with ``text``), its head in two parts (``head``, then
    ``more``)."""
    cdef Py_ssize_t n = len(keys), i, most = head_size + more_size + 2
    cdef bytes key
    cdef char *line
    cdef char *out
    if len(values) != n:
        raise ValueError("json_line: one value per key")
    for i in range(n):
        most += PyBytes_GET_SIZE(<bytes?>keys[i]) + 1 + _most_bytes(values[i])
    line = <char *>malloc(most)
    if line == NULL:
        raise MemoryError()
    try:
        memcpy(line, head, head_size)
        memcpy(line + head_size, more, more_size)
        out = line + head_size + more_size
        for i in range(n):
            key = <bytes>keys[i]
            if i:
                out[0] = b' ' if text else b','
                out += 1
            memcpy(out, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            out += PyBytes_GET_SIZE(key)
            out = _put_value(out, values[i], i < 64 and (millis >> i) & 1, text)
        if text:
            out[0] = b'\n'
            return PyBytes_FromStringAndSize(line, out + 1 - line)
        memcpy(out, b"}\n", 2)
        return PyBytes_FromStringAndSize(line, out + 2 - line)
    finally:
        free(line)


# the timestamp's part up to the second, formatted once a second: "YYYY-MM-DDTHH:MM:SS"
cdef long long _stamp_second = -1
cdef char _stamp_prefix[19]
cdef double _LAST_STAMPED = 253402300800.0     # 10000-01-01: four-digit years only


cdef int _renew_stamp(long long second) except -1:
    global _stamp_second
    cdef time_t t = <time_t>second
    cdef tm parts
    if gmtime_r(&t, &parts) == NULL:
        raise ValueError(f"cannot write {second} as a timestamp")
    fi_year(_stamp_prefix, parts.tm_year + 1900)
    _stamp_prefix[4] = b'-'
    fi_two_digits(_stamp_prefix + 5, parts.tm_mon + 1)
    _stamp_prefix[7] = b'-'
    fi_two_digits(_stamp_prefix + 8, parts.tm_mday)
    _stamp_prefix[10] = b'T'
    fi_clock(_stamp_prefix + 11, parts.tm_hour, parts.tm_min, parts.tm_sec)
    _stamp_second = second
    return 0


def stamped_line(double created, bytes envelope not None, tuple keys not None, tuple values not None,
                 uint64_t millis=0, bint text=False):
    """``json_line`` whose head is ``{"ts":"<created as 2026-12-02T04:12:06.123Z>`` and ``envelope``;
    with ``text``, ``logfmt_line`` whose head is the bare timestamp and ``envelope``. A time before
    1970 or past 9999 raises (the caller makes that line the other way)."""
    return _stamped(created, envelope, keys, values, millis, text)


cdef bytes _stamped(double created, bytes envelope, tuple keys, tuple values, uint64_t millis, bint text):
    """``stamped_line``'s work, a C call for ``stamped_lines``' loop."""
    cdef long long second
    cdef int ms
    cdef char head[32]
    if not 0.0 <= created < _LAST_STAMPED:
        raise ValueError(f"cannot write {created!r} as a timestamp")
    second = <long long>created
    ms = <int>((created - second) * 1000)
    if second != _stamp_second:
        _renew_stamp(second)
    memcpy(head, b'{"ts":"', 7)
    memcpy(head + 7, _stamp_prefix, 19)
    head[26] = b'.'
    head[27] = <char>(48 + ms // 100)
    fi_two_digits(head + 28, ms % 100)
    head[30] = b'Z'
    if text:    # the timestamp alone: 2026-12-02T04:12:06.123Z
        return _line(head + 7, 24, PyBytes_AS_STRING(envelope), PyBytes_GET_SIZE(envelope), keys, values, millis,
                     True)
    return _line(head, 31, PyBytes_AS_STRING(envelope), PyBytes_GET_SIZE(envelope), keys, values, millis, False)


def stamped_lines(list pending not None, Py_ssize_t start, bytes envelope not None, tuple keys not None,
                  uint64_t millis, tuple kept_as_is not None, list out not None, bint text=False):
    """``stamped_line`` (with ``text``: its text line) of each ``(created, values)`` of ``pending`` from ``start`` on, appended to
    ``out``, while its values may be written as they were kept; returns the index of the first that
    may not, or that cannot be written so (``len(pending)`` when none): the caller makes that line
    its own way, then calls again from the next.

    ``kept_as_is`` is ``(known, shown, deployment_at, error_at, path_at)``: values may be written as
    kept when ``values[deployment_at]`` is in the set ``known``, ``values[error_at]`` is None and
    the dict ``shown`` maps ``values[path_at]`` to itself (which fields those are, and why, is the
    caller's: ``observe.access``)."""
    cdef frozenset known = <frozenset?>kept_as_is[0]
    shown = kept_as_is[1]
    if not PyDict_Check(shown):
        raise TypeError("stamped_lines: kept_as_is[1] must be a dict")
    cdef Py_ssize_t deployment_at = kept_as_is[2], error_at = kept_as_is[3], path_at = kept_as_is[4]
    cdef Py_ssize_t i, n = len(pending), n_keys = len(keys)
    if not (0 <= deployment_at < n_keys and 0 <= error_at < n_keys and 0 <= path_at < n_keys):
        raise ValueError("stamped_lines: kept_as_is names a field beyond keys")
    cdef tuple item, values
    for i in range(start, n):
        item = <tuple?>pending[i]
        values = <tuple?>item[1]
        if len(values) != n_keys:       # the indexes below are unchecked
            raise ValueError(f"stamped_lines: a line of {len(values)} values for {n_keys} keys")
        path = values[path_at]
        shown_path = PyDict_GetItem(shown, path)      # borrowed; NULL for a path not shown yet
        if (values[error_at] is not None or values[deployment_at] not in known
                or shown_path is NULL or (<object>shown_path is not path and <object>shown_path != path)):
            return i
        try:
            out.append(_stamped(item[0], envelope, keys, values, millis, text))
        except Exception:
            return i
    return n


def pipe_pieces(list lines not None, Py_ssize_t limit):
    """``lines`` (bytes) joined in order into pieces of at most ``limit`` bytes each, a longer line a
    piece of its own: what one ``write`` to a pipe sends without another process's bytes between."""
    cdef list pieces = [], piece = []
    cdef Py_ssize_t size = 0, length
    cdef bytes line
    for line in lines:
        length = len(line)
        if piece and size + length > limit:
            pieces.append(b"".join(piece) if len(piece) > 1 else piece[0])
            piece = []
            size = 0
        piece.append(line)
        size += length
    if piece:
        pieces.append(b"".join(piece) if len(piece) > 1 else piece[0])
    return pieces
