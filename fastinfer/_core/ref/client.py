"""The reference for ``fastinfer._core.client``: its own source, ``_core/client.py``, run as plain
Python. The gateway imports the module compiled (with ``client.pxd``'s types); this loads the same
text uncompiled, so the tests can run the direct connection's suite over both."""
from __future__ import annotations

from ._as_python import source_as_python

_module = source_as_python("client")

ClientStream = _module.ClientStream
DirectConnection = _module.DirectConnection
DirectRequest = _module.DirectRequest
RequestBody = _module.RequestBody

__all__ = ["ClientStream", "DirectConnection", "DirectRequest", "RequestBody"]
