"""The reference for ``fastinfer._core.upstream``: its own source, ``_core/upstream.py``, run as
plain Python. The gateway imports the module compiled (with ``upstream.pxd``'s types); this loads the
same text uncompiled, under another name, so the tests can run the transport's suite over both and
hold the compiled one to what the Python says."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_SOURCE = Path(__file__).resolve().parent.parent / "upstream.py"
_spec = importlib.util.spec_from_file_location("fastinfer._core._upstream_as_python", _SOURCE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

Exchange = _module.Exchange
H1Connection = _module.H1Connection
KeptAlive = _module.KeptAlive
UpstreamReply = _module.UpstreamReply

__all__ = ["Exchange", "H1Connection", "KeptAlive", "UpstreamReply"]
