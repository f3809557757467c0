# The C types of relay.py (Cython's pure-Python mode): the relay's fields (those the engine and
# ``formats.openai`` read are public), and the reading of a read's events, a C call from ``feed``.

cimport cython

from fastinfer._core.sse cimport plain_prefix, whole_events

@cython.locals(data=bytes)
cpdef bint needs_parsing(data)

cpdef bint is_error_frame(dict frame)

cdef class OpenAIPassthrough:
    cdef object _parser
    cdef bytes _carry
    cdef bint _client_wants_usage
    cdef dict _request_body
    cdef public object raw_usage
    cdef public Py_ssize_t events
    cdef public bint finished
    cdef public object error, failure

    @cython.locals(out=bytes, rest=bytes, read=bytes, plain=Py_ssize_t, lines=Py_ssize_t)
    cpdef bytes feed(self, chunk)

    @cython.locals(events=list, kept=list, changed=bint, data=bytes, frame=dict, i=Py_ssize_t, n=Py_ssize_t)
    cdef bytes _read(self, bytes out)
