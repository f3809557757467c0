# The C types of client.py (Cython's pure-Python mode): the fields, and the methods called only
# from inside the module, which compiled are C calls (and not callable from Python).
cimport cython

from fastinfer._core.heads cimport framed_chunk


cdef class RequestBody:
    cdef readonly Py_ssize_t length
    cdef readonly list chunks
    cdef readonly Py_ssize_t total_bytes
    cdef readonly bint complete
    cdef bint _keep
    cdef object _waiter, _loop

    @cython.locals(missing=Py_ssize_t, rest=bytes)
    cpdef bytes feed(self, bytes data)
    cpdef bytes read_nowait(self)
    cdef _start(self, Py_ssize_t length, Py_ssize_t limit, object loop)


cdef class DirectRequest(dict):
    cdef public object method, path, headers, content_length, writer, transport, protocol, task
    cdef public object keep_alive      # True or False: an object field, so that slots.h can make it a member
    cdef public object content         # its RequestBody: an object field, so that slots.h can make it a member
    cdef object __weakref__

    cdef _fill(self, object path, object headers, bint keep_alive, RequestBody body, object connection)


cdef class DirectConnection:
    cdef public object transport, _task_handler, key_memo
    cdef public Py_ssize_t output_size
    cdef object _server, _written_response, _handoff, _draining, _loop
    cdef dict _routes
    cdef Py_ssize_t _max_body_bytes
    cdef double _keepalive_timeout, _idle_since
    cdef readonly bytes _buffer      # read by the tests: what waits to be framed
    cdef DirectRequest _request
    cdef RequestBody _body
    cdef bint _close_after, _write_paused, _reading_paused, _lingering
    cdef object _drain_waiter, _idle_timer, _task, _waiter
    cdef tuple _pending

    @cython.locals(size=Py_ssize_t)
    cpdef _writelines(self, tuple chunks)
    cpdef _close(self)
    cdef _next_request(self)
    @cython.locals(end=Py_ssize_t, head_length=Py_ssize_t, body=RequestBody, request=DirectRequest,
                   keep_alive=bint)
    cdef _frame(self)
    cdef _wake_task(self)
    @cython.locals(body_missing=bint)
    cdef _answered(self, bint keep_alive)
    cdef _hand_off(self)
    cdef _went_idle(self)
    cdef _cancel_idle_timer(self)


cdef class ClientStream:
    cdef public object writer, transport, head
    cdef public bint chunked, aiohttp_head
    cdef object _send, _is_closing, _buffered

    cpdef bint write(self, bytes data) except -1
    cpdef end(self, bytes ending)
