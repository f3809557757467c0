"""Pure-Python references for the compiled core: slow, obvious, and the
oracle the tests compare the Cython structures against."""
