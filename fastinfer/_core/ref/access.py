"""The reference for ``fastinfer._core.access``: its own source, ``_core/access.py``, run as plain
Python. The gateway uses the module compiled (with ``access.pxd``'s types); this loads the same
text uncompiled, so ``tests/test_access_capture.py`` runs over both."""
from __future__ import annotations

from ._as_python import source_as_python

_module = source_as_python("access")

AccessBuffer = _module.AccessBuffer
error_text = _module.error_text
CLIENT_CLOSED = _module.CLIENT_CLOSED
CLIENT_CLOSED_ERROR = _module.CLIENT_CLOSED_ERROR

__all__ = ["AccessBuffer", "CLIENT_CLOSED", "CLIENT_CLOSED_ERROR", "error_text"]
