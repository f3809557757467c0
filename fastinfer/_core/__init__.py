"""The compiled core: what runs per request or per streamed chunk.

Owns: the SSE parser and writer (``sse``), and the host-wide shared-memory
structures with atomic counters (``shm``: segment, admission slots and priority
queue, circuit breakers, metric counters and histograms).

Must not touch: configuration, HTTP, asyncio policy. Callers hand in plain
integers and bytes; policy lives in the Python packages around it.

Every compiled structure has a pure-Python reference in ``fastinfer._core.ref``
with the same behaviour; the tests drive both with the same cases.
"""

import glob as _glob
import os as _os


def _find_compiled_modules() -> None:
    """Run from a source checkout after ``pip install .``, the compiled modules are not
    next to this file but in the installed copy: look for them there too. (The
    checkout's directory comes first on ``sys.path`` with ``python -m fastinfer``.)"""
    here = _os.path.dirname(__file__)
    if _glob.glob(_os.path.join(here, "sse.*.so")):
        return
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        installed = str(distribution("fastinfer").locate_file("fastinfer/_core"))
    except (ImportError, PackageNotFoundError):
        return
    if _os.path.isdir(installed) and _os.path.realpath(installed) != _os.path.realpath(here):
        __path__.append(installed)


_find_compiled_modules()
