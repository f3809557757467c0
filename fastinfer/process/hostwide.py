"""The host-wide state the supervisor creates before any worker starts.

One shared-memory segment sized from the config (admission slots and queues,
breakers, metric counters and histograms) and one eventfd per worker slot to
wake that worker when another process hands it a slot. The segment's name is
unlinked as soon as it is mapped: forked workers inherit the mapping, so
nothing can be left in /dev/shm, even if the supervisor is killed.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from .._core import shm
from ..config import Config
from ..metrics import BUCKETS, MetricsLayout


@dataclass
class HostState:
    segment: "shm.Segment"
    metrics_layout: MetricsLayout
    wake_fds: list[int]

    @classmethod
    def create(cls, config: Config, n_workers: int) -> "HostState":
        metrics_layout = MetricsLayout(config)
        layout = shm.Layout(
            n_workers,
            [(d.max_concurrency, d.queue_capacity, len(d.replicas)) for d in config.deployments],
            metrics_layout.n_counters, metrics_layout.n_histograms, BUCKETS,
        )
        segment = shm.Segment.create(f"fastinfer-{os.getpid()}-{secrets.token_hex(4)}", layout)
        segment.unlink()
        wake_fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(n_workers)]
        return cls(segment, metrics_layout, wake_fds)

    def reclaim(self, worker: int) -> dict:
        """Give back what a dead worker held: slots, queue tickets, breaker probes."""
        reclaimed = self.segment.reclaim_worker(worker)
        try:
            os.eventfd_read(self.wake_fds[worker])  # a wake meant for the dead worker
        except BlockingIOError:
            pass
        return reclaimed

    def close(self) -> None:
        for fd in self.wake_fds:
            os.close(fd)
        self.wake_fds = []
        self.segment.close()
