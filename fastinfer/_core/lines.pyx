# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A log line that is a JSON object of plain values, written in one pass: every access-log line.

Owns: ``json_line(head, keys, values, millis)``: ``head`` (the line up to its first field: the
opening brace and the envelope, ``{"ts":…,"pid":…,``), then each ``keys[i]`` (an encoded
``"name":``) with ``values[i]`` rendered byte for byte as orjson renders it — ``null``, ``true`` /
``false``, an integer (64-bit, as orjson takes them), a float as its shortest round trip (orjson's
notation: ``0.00001``, ``1.5e-6``, ``1e+16``; NaN and infinities ``null``), a string UTF-8 with
orjson's escapes — then the closing brace and a newline. A value whose bit is set in ``millis`` is
seconds written as milliseconds to 3 decimals (``int(s * 1e6 + 0.5) / 1000``). Anything else (a
type orjson would need its own rules for, a string that is not valid UTF-8, an integer past 64
bits) raises, and the caller makes that line the other way.

Why: the access log's flush built a dict of sixteen fields per line and handed it to orjson; the
dict's construction cost more than the line. Must not touch: which fields a line has or what they
mean (``observe.access``), logging. The reference is ``ref/lines.py`` (orjson itself).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_Check
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport fabs, isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, strchr, strlen

cdef extern from "decimal.h":
    int fi_decimal(char *out, long long n) nogil

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL
    void PyMem_Free(void *p)
    int Py_DTSF_ADD_DOT_0
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    long long PyLong_AsLongLongAndOverflow(object n, int *overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object n) except? -1
    bint PyBool_Check(object o)


cdef struct _Line:
    char *data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(_Line *line, Py_ssize_t more) except -1:
    cdef Py_ssize_t want = line.size + more
    cdef char *grown
    if want <= line.capacity:
        return 0
    want = max(want, line.capacity * 2)
    grown = <char *>realloc(line.data, want)
    if grown == NULL:
        raise MemoryError()
    line.data = grown
    line.capacity = want
    return 0


cdef inline int _put(_Line *line, const char *text, Py_ssize_t n) except -1:
    _reserve(line, n)
    memcpy(line.data + line.size, text, n)
    line.size += n
    return 0


cdef char *_HEX = b"0123456789abcdef"


cdef int _put_str(_Line *line, str text) except -1:
    """A JSON string as orjson writes it: ``"`` and ``\\`` escaped, control characters as \\b \\t \\n
    \\f \\r or \\u00XX, everything else (non-ASCII too) as its UTF-8."""
    cdef Py_ssize_t n, i, run = 0
    cdef const char *s = PyUnicode_AsUTF8AndSize(text, &n)   # raises on a lone surrogate, as orjson does
    cdef unsigned char c
    cdef char *out
    _reserve(line, n * 6 + 2)          # the worst case: every byte \u00XX
    out = line.data + line.size
    out[0] = b'"'
    out += 1
    for i in range(n):
        c = <unsigned char>s[i]
        if c >= 0x20 and c != b'"' and c != b'\\':
            out[0] = <char>c
            out += 1
            continue
        out[0] = b'\\'
        if c == b'"' or c == b'\\':
            out[1] = <char>c
            out += 2
        elif c == 0x08:
            out[1] = b'b'
            out += 2
        elif c == 0x09:
            out[1] = b't'
            out += 2
        elif c == 0x0A:
            out[1] = b'n'
            out += 2
        elif c == 0x0C:
            out[1] = b'f'
            out += 2
        elif c == 0x0D:
            out[1] = b'r'
            out += 2
        else:
            out[1] = b'u'
            out[2] = b'0'
            out[3] = b'0'
            out[4] = _HEX[c >> 4]
            out[5] = _HEX[c & 15]
            out += 6
    out[0] = b'"'
    line.size = (out + 1) - line.data
    return 0


cdef int _put_float(_Line *line, double value) except -1:
    """A float as orjson writes it: Python's shortest round trip (``repr``), but ``null`` for NaN and
    the infinities, an exponent without padding or plus-less (``1.5e-6``, ``1e+16``), and ten to the
    minus five in positional notation (``0.000015``)."""
    cdef char *text
    cdef char *e
    cdef char *m
    cdef int exponent
    cdef Py_ssize_t k
    if not isfinite(value):
        return _put(line, b"null", 4)
    text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        e = strchr(text, b'e')
        if e == NULL:
            return _put(line, text, strlen(text))
        exponent = int(e[1:].decode("ascii"))   # rare: very small or very large values only
        if exponent == -5:                      # orjson writes 1e-5 ≤ |v| < 1e-4 positionally
            m = text
            if m[0] == b'-':
                _put(line, b"-", 1)
                m += 1
            _put(line, b"0.0000", 6)
            for k in range(e - m):
                if m[k] != b'.':
                    _put(line, m + k, 1)
            return 0
        _put(line, text, e - text)
        if exponent < 0:
            _put(line, b"e-", 2)
        else:
            _put(line, b"e+", 2)
        _reserve(line, 20)
        line.size += fi_decimal(line.data + line.size, exponent if exponent >= 0 else -exponent)
        return 0
    finally:
        PyMem_Free(text)


cdef int _put_int(_Line *line, value) except -1:
    cdef int overflow = 0
    cdef long long n = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long u
    cdef char digits[24]
    cdef int k = 0
    _reserve(line, 24)
    if overflow == 0:
        line.size += fi_decimal(line.data + line.size, n)
        return 0
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
        line.data[line.size] = digits[k]
        line.size += 1
    return 0


cdef int _put_millis(_Line *line, value) except -1:
    """Seconds as milliseconds to 3 decimals, as ``int(s * 1e6 + 0.5) / 1000`` gives them (a double
    divided by 1000 is correctly rounded either way: the int is the double's exact value)."""
    cdef double micro = (<double>value) * 1e6 + 0.5
    if micro != micro:
        raise ValueError(f"cannot write {value!r} seconds as milliseconds")
    if not isfinite(micro):
        raise OverflowError(f"cannot write {value!r} seconds as milliseconds")
    if fabs(micro) >= 9.2e18:                   # past int64: as Python does it
        return _put_float(line, int(micro) / 1000)
    return _put_float(line, <double>(<int64_t>micro) / 1000.0)


cdef int _put_value(_Line *line, value, bint millis) except -1:
    if value is None:
        return _put(line, b"null", 4)
    if millis:
        if PyFloat_CheckExact(value) or (PyLong_Check(value) and not PyBool_Check(value)):
            return _put_millis(line, value)
        raise TypeError(f"seconds must be a number, not {type(value).__name__}")
    if PyUnicode_CheckExact(value):
        return _put_str(line, value)
    if value is True:
        return _put(line, b"true", 4)
    if value is False:
        return _put(line, b"false", 5)
    if PyLong_Check(value):
        return _put_int(line, value)
    if PyFloat_CheckExact(value):
        return _put_float(line, PyFloat_AS_DOUBLE(value))
    raise TypeError(f"json_line writes None, bool, int, float and str, not {type(value).__name__}")


def json_line(bytes head not None, tuple keys not None, tuple values not None, uint64_t millis=0):
    """``head``, then ``keys[i]`` and ``values[i]`` for every i, ``}`` and a newline (see the module)."""
    cdef Py_ssize_t n = len(keys), i
    cdef _Line line
    cdef bytes key
    if len(values) != n:
        raise ValueError("json_line: one value per key")
    line.size = 0
    line.capacity = PyBytes_GET_SIZE(head) + 64 * n + 2
    line.data = <char *>malloc(line.capacity)
    if line.data == NULL:
        raise MemoryError()
    try:
        _put(&line, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head))
        for i in range(n):
            key = <bytes?>keys[i]
            if i:
                _put(&line, b",", 1)
            _put(&line, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            _put_value(&line, values[i], i < 64 and (millis >> i) & 1)
        _put(&line, b"}\n", 2)
        return PyBytes_FromStringAndSize(line.data, line.size)
    finally:
        free(line.data)
