"""Build script: compiles the Cython core in fastinfer/_core.

Everything declarative lives in pyproject.toml; this file exists only because
extension modules still need code to describe them.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE = Path("fastinfer") / "_core"

extensions = [
    Extension(
        f"fastinfer._core.{pyx.stem}",
        [str(pyx)],
        # -pthread: the shared-memory core uses process-shared robust mutexes, which live
        # in libpthread on glibc older than 2.34
        extra_compile_args=["-O3", "-pthread"],
        extra_link_args=["-pthread"],
    )
    for pyx in sorted(CORE.glob("*.pyx"))
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
        },
    ),
)
