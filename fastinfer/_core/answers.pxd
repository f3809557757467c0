# The C types of answers.py (Cython's pure-Python mode): the recorder's fields.

cimport cython

cdef class AnswerRecorder:
    cdef object _clock, _wall, _series_of, _access

    @cython.locals(duration=double)
    cpdef answered(self, request_id, method, path, data, status, error)
