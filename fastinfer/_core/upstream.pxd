# The C types of upstream.py (Cython's pure-Python mode): the fields, and the methods called only
# from inside the module, which compiled are C calls (and not callable from Python).
cimport cython

from fastinfer._core.heads cimport ChunkedBody


cdef class UpstreamReply:
    cdef public object status, headers, body, first, stream


cdef class KeptAlive:
    cdef readonly list idle
    cdef Py_ssize_t max_idle
    cdef double idle_timeout_s
    cdef bint closed

    @cython.locals(conn=H1Connection)
    cpdef take(self)
    cpdef keep(self, H1Connection conn, bint reusable)


cdef class H1Connection:
    cdef public object pool, transport, sink, state, _parser, _timer
    cdef public bint reused, got_bytes
    cdef public double idle_since
    cdef object _loop, _time, _on_data, _status, _headers, _framing, _piece, _pieces, _timeouts
    cdef ChunkedBody _chunks
    cdef bint _head_ready, _keep_alive, _paused
    cdef Py_ssize_t _unframed
    cdef double _last_io, _deadline, _timer_due

    @cython.locals(now=cython.double, due=cython.double)
    cdef _send(self, bytes request, sink, timeouts)
    cdef _read_by_llhttp(self, sink, bytes data)
    @cython.locals(piece=bytes)
    cdef _read_chunked(self, ChunkedBody chunks, bytes data, Py_ssize_t start)
    @cython.locals(exchange=Exchange, body_start=Py_ssize_t, keep_alive=bint)
    cdef _take_whole(self, sink, bytes data, tuple whole)
    cdef bint _head_read(self, sink, status, headers, framing, bint keep_alive) except -1
    cdef _parse_error(self, e)
    cdef _timed_out(self, error)
    cdef _cancel_timer(self)
    cdef _finish(self)
    cdef _fail(self, error)
    cdef _released(self)
    cdef bint _reusable(self) except -1


cdef class Exchange:
    cdef readonly H1Connection conn
    cdef readonly bint want_stream, streaming, ended, closed
    cdef readonly object status, headers, end_error
    cdef public object ready        # read-only from Python all the same (``fi_readonly_slots``, in the .py)
    cdef public list parts
    cdef object on_end_cb

    cdef _on_whole(self, status, headers, bytes body)
    cdef _on_end(self, error)


cdef bint _labelled_json(str content_type) except -1

@cython.locals(exchange=Exchange)
cdef _tell_end(sink, error)
