"""Active health checks: each replica of a deployment with ``health_check`` probed once per interval, host-wide.

Owns: ``HealthProber``. The worker holding the host's LEASE_HEALTH_PROBER calls
``sweep`` every tick; it starts a probe -- ``GET {server root}{path}`` with the
replica's credential, ``timeout_s`` for every phase -- of each replica whose
interval has passed (never two at once for one replica). A 2xx is a success,
anything else (another status, a timeout, a refused connection) a failure.
After ``unhealthy_after`` failures in a row the replica is marked unhealthy in
the shared segment (``ReplicaLoad.set_healthy``): no worker routes to it, and
sticky sessions bound to it are re-pinned at their next request. After
``healthy_after`` successes in a row it is healthy again, and its entries in
the prefix index are forgotten (a server that came back has an empty cache).

The counts of successes and failures live in the prober (a worker that takes
the lease over starts them afresh); the health itself lives in the segment and
survives both a change of prober and a reload. Probes do not consult or feed
the circuit breaker: the breaker is the passive view, this the active one, and
a replica gets traffic only when both allow it. Must not touch: routing.
"""
from __future__ import annotations

import asyncio
import logging

from ..aio import cancel_and_wait
from ..transport import FixedTimeouts

log = logging.getLogger("fastinfer.backends")


class _Replica:
    __slots__ = ("index", "due", "probing", "failures", "successes")

    def __init__(self, index: int):
        self.index = index
        self.due = 0.0
        self.probing = False
        self.failures = 0
        self.successes = 0


class _Target:
    __slots__ = ("name", "control", "check", "load", "prefix", "worker", "replicas", "timeouts")

    def __init__(self, name: str, control, check, load, prefix, worker: int):
        self.name = name
        self.control = control          # control.ReplicaControl
        self.check = check              # config.HealthCheckConfig
        self.load = load                # the deployment's shared ReplicaLoad (health lives there)
        self.prefix = prefix            # the deployment's PrefixIndex, or None
        self.worker = worker
        self.replicas = [_Replica(i) for i in range(load.n_replicas)]
        t = check.timeout_s
        self.timeouts = FixedTimeouts(t, t, t, t)


class HealthProber:
    """The probes of every deployment with ``health_check``, run by whichever worker holds the lease."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._targets: list[_Target] = []
        self._probes: set[asyncio.Task] = set()

    def add(self, name: str, control, check, load, prefix, worker: int) -> None:
        self._targets.append(_Target(name, control, check, load, prefix, worker))

    @property
    def tick_s(self) -> float:
        """How often ``sweep`` should run: a quarter of the shortest interval, within 20 ms .. 1 s."""
        shortest = min((t.check.interval_s for t in self._targets), default=1.0)
        return min(1.0, max(0.02, shortest / 4))

    def __bool__(self) -> bool:
        return bool(self._targets)

    def sweep(self) -> None:
        """Start the probes that are due."""
        now = self._loop.time()
        for target in self._targets:
            for replica in target.replicas:
                if not replica.probing and now >= replica.due:
                    replica.due = now + target.check.interval_s
                    replica.probing = True
                    task = self._loop.create_task(self._probe(target, replica))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)

    async def stop(self) -> None:
        await cancel_and_wait(*self._probes)

    async def _probe(self, target: _Target, replica: _Replica) -> None:
        try:
            outcome = await target.control.call(replica.index, "GET", target.check.path, None, target.timeouts,
                                                breaker=False)
        finally:
            replica.probing = False
        self._record(target, replica, outcome.ok, outcome.detail)

    def _record(self, target: _Target, replica: _Replica, ok: bool, detail: str) -> None:
        check, load, r = target.check, target.load, replica.index
        if ok:
            replica.failures = 0
            replica.successes += 1
            if replica.successes >= check.healthy_after and not load.healthy(r):
                load.set_healthy(r, True)
                if target.prefix is not None and target.prefix.capacity:
                    target.prefix.forget_replica(target.worker, r)
                log.warning("replica %s/%s is healthy again (%d successful health checks)", target.name,
                            target.control.replica_name(r), replica.successes)
        else:
            replica.successes = 0
            replica.failures += 1
            if replica.failures >= check.unhealthy_after and load.healthy(r):
                load.set_healthy(r, False)
                log.warning("replica %s/%s is unhealthy: %d health checks failed (last: %s); it gets no traffic "
                            "until it passes %d", target.name, target.control.replica_name(r), replica.failures,
                            detail, check.healthy_after)
