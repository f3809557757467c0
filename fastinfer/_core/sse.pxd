# The C types of sse.pyx: its classes' fields and C methods, and the two functions a relay calls on
# every read of a stream (``relay.OpenAIPassthrough.feed``: ``whole_events``, ``plain_prefix``),
# declared here so that those calls are C calls, not calls through a Python function object with
# their arguments parsed (the relay's feed, callgrind: 2.13 k -> 1.93 k instructions a read).
cimport cython


cdef struct Buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap


@cython.final
cdef class Event:
    cdef readonly str event
    cdef readonly bytes data
    cdef readonly object id
    cdef readonly object retry


@cython.final
cdef class SSEParser:
    cdef Buf _carry          # bytes of an unfinished line
    cdef Buf _data           # data buffer (each value followed by LF)
    cdef Buf _etype          # event type buffer
    cdef bint _skip_lf       # previous chunk ended with CR: a leading LF belongs to it
    cdef int _bom            # 0..2: BOM bytes matched at stream start; 3: decided
    cdef object _id_buffer   # str, or None if no valid id field in this stream
    cdef object _block_retry # int or None: valid retry of the current block
    cdef bytes _etype_cache_b
    cdef str _etype_cache_s
    cdef readonly str last_event_id
    cdef readonly object reconnection_time

    cdef void _new_stream(self)
    cdef int _parse(self, const char* p, Py_ssize_t n, list out) except -1
    cdef int _line(self, const char* p, Py_ssize_t n, list out) except -1
    cdef int _retry(self, const char* v, Py_ssize_t n) except -1
    cdef str _event_type(self)
    cdef int _dispatch(self, list out) except -1


cpdef tuple whole_events(bytes carry, bytes chunk)
cpdef tuple plain_prefix(bytes events, tuple markers, Py_ssize_t offset=*)
