# The C type of slotted.pyx's ``SlotFields``, for the compiled modules that read records through it
# (``access.py``): their ``of`` is then a C call.


cdef class SlotFields:
    cdef readonly tuple names
    cdef Py_ssize_t count
    cdef type seen                      # the type whose offsets are kept (None: none yet)
    cdef Py_ssize_t offsets[32]         # slotted.pyx's MAX_FIELDS

    cpdef tuple of(self, obj)
    cdef bint _learn(self, type cls) except -1
