"""Replica selection for one deployment."""
from __future__ import annotations

import random
from typing import Collection

from ..config import DeploymentConfig

_EWMA_ALPHA = 0.2


class ReplicaPicker:
    __slots__ = ("policy", "names", "weights", "in_flight", "latency_ewma", "_rr", "_rng")

    def __init__(self, deployment: DeploymentConfig):
        self.policy = deployment.routing
        self.names = [r.name for r in deployment.replicas]
        self.weights = [r.weight for r in deployment.replicas]
        n = len(self.names)
        self.in_flight = [0] * n
        self.latency_ewma = [0.0] * n
        self._rr = 0
        self._rng = random.Random()

    def pick(self, avoid: Collection[int] = ()) -> int | None:
        """A replica index not in ``avoid``; None when every replica is avoided."""
        n = len(self.names)
        if n == 1:
            return None if 0 in avoid else 0
        candidates = [i for i in range(n) if i not in avoid] if avoid else range(n)
        if not candidates:
            return None
        policy = self.policy
        if policy == "round_robin" or policy in ("prefix", "sticky"):
            return self._weighted_round_robin(candidates)
        if policy == "power_of_two":
            a, b = self._rng.sample(list(candidates), 2) if len(candidates) > 1 else (candidates[0],) * 2
            return a if self._load(a) <= self._load(b) else b
        if policy == "latency":
            return min(candidates, key=lambda i: (self.latency_ewma[i], self.in_flight[i]))
        # least_loaded; ties broken round-robin so idle replicas share the work
        start = self._rr = (self._rr + 1) % n
        return min(candidates, key=lambda i: (self._load(i), (i - start) % n))

    def _load(self, i: int) -> float:
        return self.in_flight[i] / self.weights[i]

    def _weighted_round_robin(self, candidates) -> int:
        total = sum(self.weights[i] for i in candidates)
        self._rr = (self._rr + 1) % max(total, 1)
        point = self._rr
        for i in candidates:
            point -= self.weights[i]
            if point < 0:
                return i
        return candidates[0]

    def started(self, i: int) -> None:
        self.in_flight[i] += 1

    def finished(self, i: int, latency_s: float | None) -> None:
        self.in_flight[i] -= 1
        if latency_s is not None:
            prev = self.latency_ewma[i]
            self.latency_ewma[i] = latency_s if prev == 0.0 else prev + _EWMA_ALPHA * (latency_s - prev)
