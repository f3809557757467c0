# The C types of access.py (Cython's pure-Python mode): the buffer's fields, and the method called
# only from inside the module, which compiled is a C call.

cdef class AccessBuffer:
    cdef public list pending
    cdef public bint closed
    cdef object _loop, _flush, _redact, _timer
    cdef double _flush_s
    cdef Py_ssize_t _max_pending
    cdef str _id_prefix

    cdef _keep(self, tuple line)
