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
and an admitted request hold (``attempts``); an answered request's access line, kept (``access``). docs/architecture-core.md
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
    for them there too. A module compiled from Python source (a ``.py`` beside its
    ``.pxd``) would still be found here first, as its plain-Python source: the installed
    compiled one is imported in its place (``_CompiledFirst``)."""
    here = _os.path.realpath(_os.path.dirname(__file__))
    if _glob.glob(_os.path.join(here, "sse.*.so")):
        return
    import sys
    for entry in sys.path:
        candidate = _os.path.realpath(_os.path.join(entry or _os.getcwd(), "fastinfer", "_core"))
        if candidate != here and _glob.glob(_os.path.join(candidate, "sse.*.so")):
            __path__.append(candidate)
            compiled = {}
            for pxd in _glob.glob(_os.path.join(here, "*.pxd")):
                stem = _os.path.basename(pxd)[:-len(".pxd")]
                found = _glob.glob(_os.path.join(candidate, f"{stem}.*.so"))
                if found and _os.path.exists(_os.path.join(here, f"{stem}.py")):
                    compiled[f"{__name__}.{stem}"] = found[0]
            if compiled:
                sys.meta_path.insert(0, _CompiledFirst(compiled))
            return


class _CompiledFirst:
    """An import finder for the few ``fastinfer._core`` modules that are both a ``.py`` in the
    checkout and compiled in the installed copy: the compiled one, when it is imported (no sooner:
    the supervisor imports few of them)."""

    def __init__(self, paths: dict):
        self.paths = paths        # module name -> its compiled file

    def find_spec(self, name, path=None, target=None):
        compiled = self.paths.get(name)
        if compiled is None:
            return None
        import importlib.util
        return importlib.util.spec_from_file_location(name, compiled)


_find_compiled_modules()
