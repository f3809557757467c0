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
from dataclasses import dataclass, field

from .._core import shm
from ..config import Config
from ..metrics import BUCKETS, MetricsLayout


@dataclass
class HostState:
    segment: "shm.Segment"
    metrics_layout: MetricsLayout
    wake_fds: list[int]
    # keys the admin-auth throttle's hash of client addresses; made before the fork, so shared
    auth_salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    @classmethod
    def create(cls, config: Config, n_workers: int) -> "HostState":
        metrics_layout = MetricsLayout(config, n_workers)
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

    def carry_counters_from(self, old: "HostState", since=None):
        """Add the counters ``old`` gathered (since the ``since`` snapshot) to the series both
        configs share, so totals survive a reload. Returns the snapshot taken now: at the
        end of the old generation's drain, call again with it to carry what the drain counted."""
        values = old.segment.counters.snapshot()
        delta = values if since is None else values - since
        new_index = self.metrics_layout.counter_index
        for key, i in old.metrics_layout.counter_index.items():
            j = new_index.get(key)
            if j is not None and MetricsLayout.carried(key) and delta[i]:
                self.segment.counters.add(j, int(delta[i]))
        return values

    def count_reload(self) -> None:
        """A reload gives every deployment fresh sessions: count it once per deployment."""
        for key, i in self.metrics_layout.counter_index.items():
            if key[0] == "session_rebuilds_total" and key[1][1] == "reload":
                self.segment.counters.add(i, 1)

    def close(self) -> None:
        if self.segment.closed:
            return
        for fd in self.wake_fds:
            os.close(fd)
        self.wake_fds = []
        self.segment.close()
