"""Replica sessions and the per-worker registry of them."""
from __future__ import annotations

import asyncio
import logging

from ..config import Config, ReplicaConfig
from ..config.secrets import SecretUnavailable
from ..providers.h1 import Pool

log = logging.getLogger("fastinfer.session")


class ReplicaSession:
    """An immutable snapshot: (replica, credential, connection pool)."""

    __slots__ = ("replica", "credential", "pool")

    def __init__(self, replica: ReplicaConfig, credential: str | None, pool: Pool | None):
        self.replica = replica
        self.credential = credential
        self.pool = pool

    @classmethod
    async def open(cls, replica: ReplicaConfig) -> "ReplicaSession":
        credential = None
        if replica.credential is not None:
            try:
                credential = await asyncio.to_thread(replica.credential.read)
            except SecretUnavailable as e:
                # serve anyway: the upstream will answer 401 and the operator sees why in the log
                log.warning("replica %s: credential %s unavailable: %s",
                            replica.name, replica.credential.describe(), e)
        pool = None
        if replica.base_url and replica.base_url.startswith(("http://", "https://")):
            pool = Pool(replica.base_url)
        return cls(replica, credential, pool)

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


class SessionRegistry:
    """Every replica session of this worker, by (deployment, replica index)."""

    def __init__(self):
        self._sessions: dict[str, list[ReplicaSession]] = {}

    @classmethod
    async def open(cls, config: Config) -> "SessionRegistry":
        registry = cls()
        for d in config.deployments:
            registry._sessions[d.name] = [await ReplicaSession.open(r) for r in d.replicas]
        return registry

    def get(self, deployment: str, replica_index: int) -> ReplicaSession:
        return self._sessions[deployment][replica_index]

    async def close(self) -> None:
        for sessions in self._sessions.values():
            for s in sessions:
                await s.close()
