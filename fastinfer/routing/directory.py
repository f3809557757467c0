"""Session bindings beyond this host: the seam the cluster layer fills in.

A host that holds no live binding for a session asks the directory before it
binds one: ``claim`` proposes the replica this host would choose and answers
the replica the session is bound to across the cluster -- the proposal when it
is the first binding, another host's when that host bound it first (first
binding wins). ``moved``, ``touched`` and ``ended`` keep the directory in step
with re-pins, use and ends; they are called on the request path, so a shared
directory queues them and never blocks. Replicas are named, not numbered:
hosts may list them in different orders.

``LocalSessionDirectory`` is one host on its own: every proposal wins, nothing
is shared, and callers skip ``claim`` altogether (``shared`` is False), so the
request path pays nothing for the seam.

Must not touch: the session table (routing.sticky binds locally with the
answer), HTTP.
"""
from __future__ import annotations

from typing import Protocol


class SessionDirectory(Protocol):
    """Where sessions are bound across hosts (``[cluster]``)."""

    #: False: ``claim`` always answers the proposal; the router then never awaits it
    shared: bool

    async def claim(self, key: bytes, deployment: str, replica: str, ttl_s: float) -> str:
        """The replica ``key`` is bound to cluster-wide: ``replica`` if this is the first binding."""

    def moved(self, key: bytes, deployment: str, replica: str, ttl_s: float) -> None:
        """This host re-pinned ``key`` to ``replica`` (circuit open, unhealthy, removed, retried there)."""

    def touched(self, key: bytes, ttl_s: float) -> None:
        """A request of ``key`` was routed: its idle time starts again."""

    def ended(self, key: bytes) -> None:
        """``key`` ended here (x-session-close, DELETE, idle expiry, eviction)."""


class LocalSessionDirectory:
    """One host alone: the first binding is always this host's."""

    shared = False

    async def claim(self, key: bytes, deployment: str, replica: str, ttl_s: float) -> str:
        return replica

    def moved(self, key: bytes, deployment: str, replica: str, ttl_s: float) -> None:
        pass

    def touched(self, key: bytes, ttl_s: float) -> None:
        pass

    def ended(self, key: bytes) -> None:
        pass
