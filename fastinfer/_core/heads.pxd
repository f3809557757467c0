# The C types of heads.pyx: its classes' fields and C methods, and what other compiled modules call
# on every read or chunk of a stream (``upstream``: ``ChunkedBody.feed``; ``client``: ``framed_chunk``),
# declared here so that those calls are C calls, not a method looked up by name and its arguments
# parsed (a method call by name was ~440 instructions, callgrind).
from libc.stdint cimport int32_t


# where in the chunked framing the next byte is (the reference's states)
cdef enum ChunkState:
    SIZE, EXTENSION, SIZE_LF, DATA, DATA_CR, DATA_LF, TRAILER, TRAILER_NAME, TRAILER_VALUE, TRAILER_LF, LAST_LF, END


cdef class Fields:
    cdef bytes _head
    cdef bytes _spans               # four int32 a field: name start and end, value start and end
    cdef const int32_t *_at
    cdef Py_ssize_t _count

    cdef Py_ssize_t _find(self, key, Py_ssize_t start) except -2
    cdef str _name(self, Py_ssize_t i)
    cdef str _value(self, Py_ssize_t i)


cdef class AnswerFields(Fields):
    cdef Py_ssize_t _find_last(self, key) except -2
    cdef dict _as_dict(self)


cdef class ChunkedBody:
    cdef ChunkState state
    cdef int digits
    cdef long long size
    cdef Py_ssize_t framing
    cdef readonly Py_ssize_t max_framing
    cdef readonly bint done
    cdef readonly bint overflowed

    cpdef bytes feed(self, bytes data, Py_ssize_t start=*)
    cdef Py_ssize_t _size_line(self, const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept
    cdef int _step(self, unsigned char c) except -1


cpdef bytes framed_chunk(bytes data, bytes after)
