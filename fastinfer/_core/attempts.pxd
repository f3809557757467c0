# The C types of attempts.py (Cython's pure-Python mode): the fields, and the methods the module
# calls on itself, which compiled are C calls.

cdef class Attempt:
    cdef public object dep, replica, trace, span, verdict
    cdef public Py_ssize_t index
    cdef public bint probe
    cdef public double started, answered_at, left_at
    cdef bint _ended, _handed_over

    cpdef end(self, verdict)


cdef class Slot:
    cdef object _admission
    cdef Py_ssize_t _index
    cdef bint _held, _handed_over

    cpdef release(self)
