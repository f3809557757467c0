"""Pure-Python reference of ``fastinfer._core.proc``: the same calls through ``ctypes``.

Owns: ``die_with_parent``, ``parent_death_signal``, ``release_free_memory``, for the tests to
hold the compiled ones to. Must not touch: anything the compiled module does not.
"""
from __future__ import annotations

import ctypes
import sys

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(signum: int) -> bool:
    if signum < 0 or signum > 64:
        raise ValueError(f"not a signal number: {signum}")
    if not sys.platform.startswith("linux"):
        return False
    return _libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) == 0


def parent_death_signal() -> int:
    if not sys.platform.startswith("linux"):
        return -1
    sig = ctypes.c_int(0)
    if _libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0) != 0:
        return -1
    return sig.value


def release_free_memory() -> bool | None:
    trim = getattr(_libc, "malloc_trim", None)
    if trim is None:
        return None
    return trim(ctypes.c_size_t(0)) == 1
