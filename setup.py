"""Build script: compiles the Cython core in fastinfer/_core.

A compiled module's source is a ``.pyx``, or a ``.py`` with a ``.pxd`` beside it (Cython's
pure-Python mode: the ``.pxd`` gives the types, and the ``.py`` is also the module's plain-Python
reference, which the tests run uncompiled).

Everything declarative lives in pyproject.toml; this file exists only because
extension modules still need code to describe them.
"""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE = Path("fastinfer") / "_core"
# the core is a score of modules, each compiled on its own: one job per CPU this build may use
# halves a two-CPU machine's build (pip install, the packaging test, CI), 2 minutes when serial
JOBS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _sources() -> list[Path]:
    pure = [pxd.with_suffix(".py") for pxd in CORE.glob("*.pxd") if pxd.with_suffix(".py").exists()]
    return sorted(CORE.glob("*.pyx")) + sorted(pure)


extensions = [
    Extension(
        f"fastinfer._core.{source.stem}",
        [str(source)],
        # -pthread: the shared-memory core uses process-shared robust mutexes, which live
        # in libpthread on glibc older than 2.34
        extra_compile_args=["-O3", "-pthread"],
        extra_link_args=["-pthread"],
    )
    for source in _sources()
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            # the core's functions as CPython's builtin functions and method descriptors, not
            # Cython's own function type: CPython 3.11 specializes a call of the former (PRECALL_*),
            # never of the latter, and the request path makes ~30 such calls a request
            "binding": False,
        },
        nthreads=JOBS if JOBS > 1 else 0,
    ),
    options={"build_ext": {"parallel": JOBS}},
)
