"""The host-wide state the supervisor creates before any worker starts.

One shared-memory segment sized and configured from the config (admission slots
and queues, breakers, metric counters and histograms, token buckets, gateway
keys, replica load, the session table, prefix indexes, host leases) and one
eventfd per worker slot to wake that worker when another process hands it a
slot. The segment's name is unlinked as soon as it is mapped: forked workers
inherit the mapping, so nothing can be left in /dev/shm, even if the supervisor
is killed.

``HostIndex`` is the map from the config's names to the segment's indices:
callers find their structures through it (``host.index.buckets[("key", name,
"requests")]``), and a reload carries state from one segment to the next by
matching names, so deployments, replicas and keys may be added, removed or
reordered by the new config.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .._core import shm
from .._core.carry import Carried, Counted, StateMap, carry_counts, carry_sessions_back, carry_state
from ..cluster.state import carry_epoch
from ..config import Config
from ..metrics import BUCKETS, MetricsLayout
from ..metrics.registry import METRICS_LIVE

log = logging.getLogger("fastinfer.supervisor")
PREFIX_INDEX_ENTRIES = 65_536      # per deployment routed by prefix (32 bytes each)

# a token bucket's name: (scope "key" | "deployment", key or deployment name, kind "requests" | "tokens"),
# the labels of fastinfer_ratelimit_remaining{scope,name,kind}
BucketName = tuple[str, str, str]


@dataclass(frozen=True)
class HostIndex:
    """The config's names -> the segment's indices (one per segment, the same in every worker)."""

    deployments: dict[str, int] = field(default_factory=dict)
    replicas: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)   # (dep, replica)
    keys: dict[str, int] = field(default_factory=dict)
    buckets: dict[BucketName, int] = field(default_factory=dict)
    # deployment name -> admission index of its rate queue (rate-limited deployments that queue)
    rate_gates: dict[str, int] = field(default_factory=dict)

    def state_map(self, old: HostIndex) -> StateMap:
        """old index -> this index, for every name both have."""
        def common(mine: dict, theirs: dict) -> dict:
            return {theirs[name]: mine[name] for name in theirs if name in mine}
        return StateMap(deployments=common(self.deployments, old.deployments),
                        replicas=common(self.replicas, old.replicas),
                        buckets=common(self.buckets, old.buckets),
                        keys=common(self.keys, old.keys))


def plan(config: Config, n_workers: int, metrics_layout: MetricsLayout) -> tuple[shm.Layout, HostIndex]:
    """The segment's Layout for ``config``, and the index of its names.

    Token buckets: a key's ``rpm`` / ``tpm`` and a deployment's ``rate_limit.rpm`` / ``tpm``,
    each refilled at its per-minute rate, holding a minute's worth -- or, for a deployment's
    requests, ``rate_limit.burst`` when the config has one.

    Rate queues: a rate-limited deployment whose ``on_capacity_exhausted`` is ``queue`` gets
    one more admission structure after the deployments' own, with one slot and the
    deployment's queue capacity: requests wait there, in priority order, for the bucket
    (``limits.quota``). It has no replicas and no name in ``index.deployments``.
    """
    deployments = config.deployments
    buckets: dict[BucketName, int] = {}
    bucket_specs: list[tuple[float, int]] = []

    def bucket(name: BucketName, per_minute: int | None, burst: int | None = None) -> None:
        if per_minute:
            buckets[name] = len(bucket_specs)
            bucket_specs.append((float(per_minute), int(burst or per_minute)))

    for k in config.keys:
        bucket(("key", k.name, "requests"), k.rpm)
        bucket(("key", k.name, "tokens"), k.tpm)
    for d in deployments:
        bucket(("deployment", d.name, "requests"), d.rate_limit.rpm, d.rate_limit.burst)
        bucket(("deployment", d.name, "tokens"), d.rate_limit.tpm)
    gated = [d for d in deployments
             if (d.rate_limit.rpm or d.rate_limit.tpm) and d.on_capacity_exhausted == "queue"]
    rate_gates = {d.name: len(deployments) + i for i, d in enumerate(gated)}
    admissions = [(d.max_concurrency, d.queue_capacity, len(d.replicas)) for d in deployments]
    admissions += [(1, d.queue_capacity, 0) for d in gated]
    layout = shm.Layout(
        n_workers, admissions,
        metrics_layout.n_counters, metrics_layout.n_histograms, BUCKETS,
        breakers=[_breaker_config(d) for d in deployments] + [_breaker_config(d) for d in gated],
        replica_weights=[[r.weight for r in d.replicas] for d in deployments] + [[] for _ in gated],
        prefix_capacity=[PREFIX_INDEX_ENTRIES if d.routing == "prefix" else 0 for d in deployments] + [0] * len(gated),
        token_buckets=bucket_specs,
        key_max_concurrency=[k.max_concurrency or 0 for k in config.keys],
        # the affinity table takes ~100 bytes per binding: only for hosts that route by session
        max_sessions=(config.server.max_sessions if any(d.routing == "sticky" for d in deployments) else 0),
    )
    index = HostIndex(
        deployments={d.name: i for i, d in enumerate(deployments)},
        replicas={(d.name, r.name): (i, j) for i, d in enumerate(deployments) for j, r in enumerate(d.replicas)},
        keys={k.name: i for i, k in enumerate(config.keys)},
        buckets=buckets,
        rate_gates=rate_gates,
    )
    return layout, index


def _breaker_config(deployment) -> tuple:
    cb = deployment.circuit_breaker
    return (cb.failure_threshold, cb.open_s, cb.max_open_s, cb.half_open_probes)


@dataclass
class HostState:
    segment: shm.Segment
    metrics_layout: MetricsLayout
    wake_fds: list[int]
    # keys the admin-auth throttle's hash of client addresses; made before the fork, so shared
    auth_salt: bytes = field(default_factory=lambda: os.urandom(16))
    index: HostIndex = field(default_factory=HostIndex)
    # server.state_dir, opened and locked by serve (limits.StateDir); the workers save into it
    state_dir: object = None

    @classmethod
    def create(cls, config: Config, n_workers: int, state_dir=None, metrics_live: bool = True) -> HostState:
        """``metrics_live=False`` for a reload's segment: /metrics answers from the old one until the
        counts are handed over (``hand_metrics_over_from``)."""
        metrics_layout = MetricsLayout(config, n_workers)
        layout, index = plan(config, n_workers, metrics_layout)
        segment = shm.Segment.create(f"fastinfer-{os.getpid()}-{os.urandom(4).hex()}", layout)
        segment.unlink()
        wake_fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(n_workers)]
        host = cls(segment=segment, metrics_layout=metrics_layout, wake_fds=wake_fds, index=index,
                   state_dir=state_dir)
        host._set_metrics_live(metrics_live)
        return host

    @property
    def metrics_live(self) -> bool:
        """Whether /metrics answers from this segment now (see ``hand_metrics_over_from``)."""
        return self.segment.counters.get(self.metrics_layout.counter_index[METRICS_LIVE]) == 1

    def _set_metrics_live(self, live: bool) -> None:
        self.segment.counters.set(self.metrics_layout.counter_index[METRICS_LIVE], int(live))

    def restore_limits(self, config: Config) -> None:
        """Bucket levels and spend saved under ``server.state_dir``, into this (fresh) segment."""
        if self.state_dir is not None:
            self.state_dir.restore(self.segment, self.index.buckets, self.index.keys, config)

    def save_limits(self, config: Config) -> None:
        """This segment's bucket levels and spend, saved under ``server.state_dir``."""
        if self.state_dir is not None:
            try:
                self.state_dir.save_segment(self.segment, self.index.buckets, self.index.keys, config)
            except (OSError, self.state_dir.Error) as e:
                log.error("cannot save limit state to %s: %s", self.state_dir.db, e)

    def reclaim(self, worker: int) -> dict:
        """Give back what a dead worker held: slots, queue tickets, breaker probes, key slots,
        replica in-flight counts, leases and prefix entries it was writing."""
        reclaimed = self.segment.reclaim_worker(worker)
        try:
            os.eventfd_read(self.wake_fds[worker])  # a wake meant for the dead worker
        except BlockingIOError:
            pass
        return reclaimed

    def carry_state_from(self, old: HostState, since: Carried | None = None) -> Carried:
        """Carry ``old``'s state into this (newer) host state by name: bucket levels and use, spend,
        the cluster epoch, circuit states and open times, replica health, session bindings and prefix
        entries (its counters and histograms go apart: ``hand_metrics_over_from``). Returns what it
        carried: at the end of the old generation's drain, call again with it to add what the drain
        spent and consumed."""
        carried = carry_state(old.segment, self.segment, self.index.state_map(old.index), since)
        if since is None:
            carry_epoch(old.segment.counters, old.metrics_layout.counter_index,
                        self.segment.counters, self.metrics_layout.counter_index)
            self._hand_over_sessions(old, carried)
        return carried

    def settle_in_flight(self, old: HostState, reserved: dict | None = None, final: bool = False) -> dict:
        """Count ``old``'s requests in flight (a reload's retiring generation: they end in, and give
        back to, its own segment) in this segment's concurrency limits, each deployment's and key's by
        name, so that a limit holds across both generations while ``old`` drains. ``reserved``: what
        the last call counted (None at the roll); each call moves it to ``old``'s in-flight now (a slot
        given back goes to this generation's best waiter); ``final`` (``old`` has exited) gives all of
        it back. Returns what is counted now."""
        reserved = dict(reserved or {})
        m = self.index.state_map(old.index)
        limits = [(("deployment", i, j), old.segment.admission(i), self.segment.admission(j))
                  for i, j in m.deployments.items()]
        limits += [(("key", i, j), old.segment.key_concurrency(i), self.segment.key_concurrency(j))
                   for i, j in m.keys.items()]
        for name, theirs, mine in limits:
            counted = reserved.get(name, 0)
            now = 0 if final else theirs.in_flight
            if now < counted:
                mine.unreserve(counted - now)
                counted = now
            elif now > counted:
                counted += mine.reserve(now - counted)    # no more than the limit leaves, no waiter jumped
            reserved[name] = counted
        return reserved

    def hand_metrics_over_from(self, old: HostState, since: Counted | None = None) -> Counted:
        """/metrics answers from this segment from now on, ``old``'s counters and histograms added
        into it (by name): all of them (``since`` None: when this generation serves and ``old`` is
        retired), or what ``old`` counted since (at the end of its drain). ``old`` answers no more
        scrapes from before the copy, so no scrape can see a total the next one does not."""
        old._set_metrics_live(False)
        new_counters, new_histograms = self.metrics_layout.counter_index, self.metrics_layout.histogram_index
        m = StateMap(counters={i: new_counters[key] for key, i in old.metrics_layout.counter_index.items()
                               if key in new_counters and MetricsLayout.carried(key)},
                     histograms={i: new_histograms[key] for key, i in old.metrics_layout.histogram_index.items()
                                 if key in new_histograms})
        counted = carry_counts(old.segment, self.segment, m, since)
        self._set_metrics_live(True)
        return counted

    def _hand_over_sessions(self, old: HostState, carried: Carried) -> None:
        """The carried session bindings are the new generation's now: take them out of the old
        segment, so the old generation, draining, closes only the backend sessions the new
        configuration could not keep (a removed deployment or replica). A binding whose replica
        left the configuration is re-pinned at its next request: count it now."""
        if not (old.segment.sessions.capacity and self.segment.sessions.capacity):
            return
        for info in old.segment.sessions.entries():
            if self.segment.sessions.get(info.key) is not None:
                old.segment.sessions.remove(info.key)
        old_names = list(old.index.deployments)
        repins = self.metrics_layout.counter_index
        for info in carried.dropped_sessions:
            name = old_names[info.deployment] if info.deployment < len(old_names) else None
            index = repins.get(("session_repins_total", (name,)))
            if index is not None:
                self.segment.counters.add(index, 1)

    def take_back_sessions(self, failed: HostState) -> None:
        """A reload of this generation's was given up (its workers could not start): the session
        bindings ``carry_state_from`` handed to ``failed`` are this generation's again."""
        carry_sessions_back(failed.segment, self.segment, self.index.state_map(failed.index))

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
