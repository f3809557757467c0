"""A relayed stream: upstream bytes through the format's relay into the client writer.

``RelayedStream`` is compiled with the attempt it takes over (``_core.attempts``, where its rules
are written: the per-chunk path, the held ending, the verdict of how the stream ended, what it
gives back exactly once). This module names what it writes to: the gateway's ``ClientWriter``.

Must not touch: aiohttp objects (the gateway passes a ``ClientWriter``), retries, routing.
"""
from __future__ import annotations

from typing import Protocol

from .._core.attempts import RelayedStream

__all__ = ["ClientWriter", "RelayedStream"]


class ClientWriter(Protocol):
    """The gateway's side of a stream: synchronous, non-blocking writes."""

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client; False when its buffer is full (pause the upstream)."""

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""
