# slots.h: a compiled class's named object fields made read-only member descriptors, which
# CPython 3.11 reads as fast as a __slots__ field (see the header).
cdef extern from "slots.h":
    int fi_readonly_slots(type cls, tuple names) except -1
