# The C types of access.py (Cython's pure-Python mode): the buffer's fields, the method called
# only from inside the module, which compiled is a C call, and ``answered``'s locals (a request id
# is a str and a usage ``make_usage``'s dict: their reads are then C calls, not method lookups).
cimport cython

from fastinfer._core.slotted cimport SlotFields

cdef SlotFields _DATA_FIELDS, _REQUEST_FIELDS, _RESULT_FIELDS

cdef _error_of(status, error, cut, stream)


cdef class AccessBuffer:
    cdef public list pending
    cdef public bint closed
    cdef object _loop, _flush, _redact, _timer
    cdef double _flush_s
    cdef Py_ssize_t _max_pending
    cdef str _id_prefix

    @cython.locals(usage=dict)
    cpdef answered(self, ts, str request_id, data, status, error, duration_s, method, path)
    cdef _keep(self, tuple line)
