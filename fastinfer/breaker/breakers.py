"""A deployment's replica breakers, as this worker uses them.

The breakers live in the host's segment and were configured from the
deployment's ``circuit_breaker`` when the segment was created (supervisor start
or reload): a worker that starts or restarts only looks them up, so it never
resets the state or the grown open time the host's other workers have built.
"""
from __future__ import annotations

from .._core.constants import ALLOWED, CLOSED, OPEN, PROBE, REJECTED
from ..config import DeploymentConfig

__all__ = ["ALLOWED", "PROBE", "REJECTED", "DeploymentBreakers"]


class DeploymentBreakers:
    __slots__ = ("breakers", "worker")

    def __init__(self, segment, index: int, deployment: DeploymentConfig, worker: int):
        self.worker = worker
        self.breakers = [segment.breaker(index, r) for r in range(len(deployment.replicas))]

    def check(self, replica: int) -> int:
        """ALLOWED, REJECTED, or PROBE (a half-open trial the caller must report)."""
        return self.breakers[replica].check(self.worker)

    def record(self, replica: int, probe: bool, failed: bool | None) -> None:
        """An attempt's verdict: True counted failure, False success, None no verdict (429, client gone)."""
        b = self.breakers[replica]
        if failed is None:
            if probe:
                b.release_probe(self.worker)
        elif failed:
            b.record_failure(self.worker, probe)
        else:
            b.record_success(self.worker, probe)

    def all_open(self) -> bool:
        """Every replica's circuit is open (and not yet due for a probe)."""
        for b in self.breakers:
            if b.state != OPEN:
                return False
        return True

    def retry_after_s(self) -> float:
        """Seconds until the first open replica admits a probe again."""
        waits = [b.retry_after_s for b in self.breakers if b.state != CLOSED]
        return min(waits) if waits else 0.0
