"""The reference for ``fastinfer._core.attempts``: its own source, ``_core/attempts.py``, run as plain
Python. The engine imports the module compiled (with ``attempts.pxd``'s types); this loads the same
text uncompiled, so the tests can run the attempts' suite over both. It judges as the engine does
(``engine.attempt`` gives the compiled module its verdicts; this one is given the same)."""
from __future__ import annotations

from ._as_python import source_as_python

_module = source_as_python("attempts")

Attempt = _module.Attempt
RelayedStream = _module.RelayedStream
Slot = _module.Slot
judged_by = _module.judged_by

__all__ = ["Attempt", "RelayedStream", "Slot", "judged_by"]
