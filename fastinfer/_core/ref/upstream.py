"""The reference for ``fastinfer._core.upstream``: its own source, ``_core/upstream.py``, run as
plain Python. The gateway imports the module compiled (with ``upstream.pxd``'s types); this loads the
same text uncompiled, so the tests can run the transport's suite over both and hold the compiled one
to what the Python says."""
from __future__ import annotations

from ._as_python import source_as_python

_module = source_as_python("upstream")

Exchange = _module.Exchange
H1Connection = _module.H1Connection
KeptAlive = _module.KeptAlive
UpstreamReply = _module.UpstreamReply

__all__ = ["Exchange", "H1Connection", "KeptAlive", "UpstreamReply"]
