"""Replica sessions and the per-worker registry of them.

A ``ReplicaSession`` is an immutable pairing of a replica's live credential
source and its connection pool. A rebuild swaps in a new session (one list
slot assignment, atomic for every reader): requests already running keep the
session, and the pool, they started with; the old pool closes its idle
connections at once and the busy ones as they come back.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..config import Config, ReplicaConfig
from ..transport import Pool
from .credentials import CredentialSource, open_credential_source

log = logging.getLogger("fastinfer.session")


class ReplicaSession:
    __slots__ = ("replica", "source", "pool")

    def __init__(self, replica: ReplicaConfig, source: CredentialSource, pool: Pool | None):
        self.replica = replica
        self.source = source
        self.pool = pool

    @property
    def credential(self) -> str | None:
        """The credential now: a rotated file or refreshed command is used by the next attempt."""
        return self.source.current()

    @staticmethod
    def new_pool(replica: ReplicaConfig) -> Pool | None:
        if replica.base_url and replica.base_url.startswith(("http://", "https://")):
            return Pool(replica.base_url)
        return None


class SessionRegistry:
    """Every replica session of this worker, by (deployment, replica index)."""

    def __init__(self):
        self._sessions: dict[str, list[ReplicaSession]] = {}

    @classmethod
    async def open(cls, config: Config, on_rotate: Callable[[str, str], None] | None = None) -> "SessionRegistry":
        """Sessions for every replica; ``on_rotate(deployment, cause)`` hears each credential change."""
        registry = cls()
        for d in config.deployments:
            sessions = []
            for r in d.replicas:
                source = await open_credential_source(r.credential, name=f"{d.name}/{r.name}")
                if on_rotate is not None:
                    source.subscribe(lambda _source, cause, name=d.name: on_rotate(name, cause))
                sessions.append(ReplicaSession(r, source, ReplicaSession.new_pool(r)))
            registry._sessions[d.name] = sessions
        return registry

    def get(self, deployment: str, replica_index: int) -> ReplicaSession:
        return self._sessions[deployment][replica_index]

    async def rebuild(self, deployment: str, cause: str) -> None:
        """Re-read every credential of ``deployment`` and give each replica a fresh pool."""
        sessions = self._sessions[deployment]
        for i, old in enumerate(sessions):
            await old.source.refresh(cause, force=True)
            sessions[i] = ReplicaSession(old.replica, old.source, ReplicaSession.new_pool(old.replica))
            if old.pool is not None:
                old.pool.close()  # idle connections now; busy ones when their exchange ends
        log.info("sessions of %s rebuilt (%s)", deployment, cause)

    async def close(self) -> None:
        for sessions in self._sessions.values():
            for s in sessions:
                await s.source.close()
                if s.pool is not None:
                    s.pool.close()
