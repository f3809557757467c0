"""A deployment's replica breakers, as this worker uses them."""
from __future__ import annotations

from ..config import DeploymentConfig

ALLOWED, REJECTED, PROBE = 0, 1, 2


class DeploymentBreakers:
    __slots__ = ("breakers", "worker")

    def __init__(self, segment, index: int, deployment: DeploymentConfig, worker: int):
        cb = deployment.circuit_breaker
        self.worker = worker
        self.breakers = [segment.breaker(index, r) for r in range(len(deployment.replicas))]
        for b in self.breakers:
            b.configure(cb.failure_threshold, cb.open_s, cb.max_open_s, cb.half_open_probes)

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
            if b.state != 1:
                return False
        return True

    def retry_after_s(self) -> float:
        """Seconds until the first open replica admits a probe again."""
        waits = [b.retry_after_s for b in self.breakers if b.state != 0]
        return min(waits) if waits else 0.0
