"""The reference for ``fastinfer._core.relay``: its own source, ``_core/relay.py``, run as plain
Python. The gateway uses the module compiled (with ``relay.pxd``'s types); this loads the same text
uncompiled, so ``tests/test_openai_relay.py`` holds the compiled relay to what the Python says."""
from __future__ import annotations

from ._as_python import source_as_python

_module = source_as_python("relay")

OpenAIPassthrough = _module.OpenAIPassthrough
needs_parsing = _module.needs_parsing
MARKERS = _module.MARKERS

__all__ = ["MARKERS", "OpenAIPassthrough", "needs_parsing"]
