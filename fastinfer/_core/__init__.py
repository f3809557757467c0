"""The compiled core: what runs per request or per streamed chunk.

Owns: the SSE parser and writer (``sse``), and the host-wide shared-memory
structures (``shm``: segment, admission slots and priority queue, circuit
breakers, metric counters and histograms, token buckets, gateway keys'
concurrency and spend, host leases, replica load, the session affinity table,
prefix indexes), their named constants (``constants``), their ``Layout``, the
records they return (``records``) and carrying their state across a reload
(``carry``); prompt block hashes (``blocks``); HTTP/1.1 heads read and written in one pass (``heads``); what every request reads of a parsed body (``bodies``: its prompt's characters, an OpenAI usage); the check of a client's
parsed JSON body against its API's shapes (``shapes``); and calls on the process itself
(``proc``: parent-death signal, handing free heap pages back); and the two connections a
request crosses, compiled from Python source with the types of a ``.pxd`` (the upstream HTTP/1.1
connection, ``upstream``; the data routes' client connection, ``client``), and what an attempt
and an admitted request hold (``attempts``). docs/architecture-core.md
describes every region.

Must not touch: configuration, HTTP semantics, asyncio policy. Callers hand in plain
integers, bytes and parsed JSON values; policy lives in the Python packages around it.

Every compiled structure has a pure-Python reference in ``fastinfer._core.ref``
with the same behaviour; the tests drive both with the same cases.
"""

import glob as _glob
import os as _os


def _find_compiled_modules() -> None:
    """Run from a source checkout after ``pip install .``, the compiled modules are not
    next to this file but in the installed copy, which the checkout shadows on
    ``sys.path`` (``python -m fastinfer`` puts the working directory first): look
    for them there too."""
    here = _os.path.realpath(_os.path.dirname(__file__))
    if _glob.glob(_os.path.join(here, "sse.*.so")):
        return
    import sys
    for entry in sys.path:
        candidate = _os.path.realpath(_os.path.join(entry or _os.getcwd(), "fastinfer", "_core"))
        if candidate != here and _glob.glob(_os.path.join(candidate, "sse.*.so")):
            __path__.append(candidate)
            return


_find_compiled_modules()
