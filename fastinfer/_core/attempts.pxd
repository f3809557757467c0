# The C types of attempts.py (Cython's pure-Python mode): the fields, and the methods the module
# calls on itself, which compiled are C calls.

from fastinfer._core.client cimport ClientStream
from fastinfer._core.relay cimport OpenAIPassthrough

cdef class Attempt:
    cdef public object dep, replica, trace, span, verdict
    cdef public Py_ssize_t index
    cdef public bint probe
    cdef public double started, answered_at, left_at, deadline
    cdef bint _ended, _handed_over

    cpdef end(self, verdict)


cdef class Slot:
    cdef object _admission
    cdef Py_ssize_t _worker
    cdef bint _held, _handed_over

    cpdef release(self)


cdef class RelayedStream:
    cdef public object reply, relay, provider
    cdef public Attempt attempt
    cdef object _loop, _client, _done, _resumer, _grace, _feed, _write
    cdef OpenAIPassthrough _passthrough
    cdef ClientStream _client_stream
    cdef list _on_done, _before_end
    cdef bint _closed, _end_sent, _starting
    cdef bytes _ending

    cdef _run_before_end(self)
    cdef _finish(self, verdict)
    cdef _hold_ending(self, bytes out)
    cdef _send_ending(self)
    cdef tuple _verdict(self, error)
