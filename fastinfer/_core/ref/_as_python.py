"""Loads a pure-mode core module's source (a ``.py`` compiled with the types of the ``.pxd`` beside
it) uncompiled, under another name: the plain-Python reference the tests hold the compiled module to."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

_CORE = Path(__file__).resolve().parent.parent


def source_as_python(stem: str) -> ModuleType:
    """``_core/<stem>.py`` run as Python, as module ``fastinfer._core._<stem>_as_python``."""
    spec = importlib.util.spec_from_file_location(f"fastinfer._core._{stem}_as_python", _CORE / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
