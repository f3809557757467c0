# cython: language_level=3
"""Calls on this process the supervisor and the workers make once or rarely, compiled so that
no process of the tree loads ``ctypes`` for them (a third of a MiB resident in each).

Owns: ``die_with_parent(signum)`` and ``parent_death_signal()`` (Linux ``prctl``
``PR_SET_PDEATHSIG`` / ``PR_GET_PDEATHSIG``), and ``release_free_memory()`` (glibc
``malloc_trim(0)``: the heap's free pages, wherever they are in it, handed back to the kernel).
Anywhere else each is a no-op that says so.

Must not touch: when they are called (``process`` decides). Same behaviour as
``fastinfer._core.ref.proc``, which makes the same calls through ``ctypes``.
"""

cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/prctl.h>
    static int fi_set_pdeathsig(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL); }
    static int fi_get_pdeathsig(void) {
        int sig = 0;
        if (prctl(PR_GET_PDEATHSIG, (unsigned long)&sig, 0UL, 0UL, 0UL) != 0) return -1;
        return sig;
    }
    #else
    static int fi_set_pdeathsig(int sig) { (void)sig; return -1; }
    static int fi_get_pdeathsig(void) { return -1; }
    #endif
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int fi_malloc_trim(void) { return malloc_trim(0); }
    #else
    static int fi_malloc_trim(void) { return -1; }
    #endif
    """
    int fi_set_pdeathsig(int sig) nogil
    int fi_get_pdeathsig() nogil
    int fi_malloc_trim() nogil

__all__ = ["die_with_parent", "parent_death_signal", "release_free_memory"]


def die_with_parent(int signum) -> bool:
    """Have the kernel send ``signum`` to this process when its parent exits (0: never).
    False where the kernel cannot (not Linux)."""
    if signum < 0 or signum > 64:
        raise ValueError(f"not a signal number: {signum}")
    return fi_set_pdeathsig(signum) == 0


def parent_death_signal() -> int:
    """The signal ``die_with_parent`` asked for (0: none); -1 where the kernel cannot say."""
    return fi_get_pdeathsig()


def release_free_memory() -> bool | None:
    """Hand the heap's free pages back to the kernel. True if any were, False if none were, None
    where the C library cannot (not glibc)."""
    cdef int released
    with nogil:
        released = fi_malloc_trim()
    return None if released < 0 else released == 1
