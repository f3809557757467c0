"""Sizes and configuration of a host-wide shared-memory segment: the one ``Layout``
that the compiled core (``fastinfer._core.shm``) and its pure-Python reference
(``fastinfer._core.ref.shm``) both use and re-export.

Owns: validating what a segment is created with, and a plain value that
pickles, compares and hashes. It is built once per segment (supervisor start,
reload, ``Segment.attach``), never per request, so it stays plain Python.
Everything configuration-like that the core needs (breaker thresholds, ...) is
in it, so the segment is configured once, when it is created, and never by the
workers.

Must not touch: shared memory, configuration parsing. Only ints, floats and
lists of them; names (of deployments, keys, ...) live with the caller
(``process.hostwide``), which maps them to the indices used here.
"""
from __future__ import annotations

import math

from .constants import MAX_POOL, MAX_REPLICAS, MAX_SPAN_NS, MAX_WORKERS

__all__ = ["Layout", "MAX_POOL", "DEFAULT_BREAKER"]

MAX_SESSIONS = 1 << 26    # 4 GiB of session slots: far beyond any host's need
MAX_PREFIX = 1 << 26      # 2 GiB of prefix entries per deployment, likewise

# (failure_threshold, open_s, max_open_s, half_open_probes) of a deployment that names none
DEFAULT_BREAKER = (5, 30.0, 300.0, 1)


class Layout:
    """What a segment holds. Plain, picklable, comparable.

    Positional (as since the first segment):
      n_workers       worker slots (1..4096)
      deployments     [(max_concurrency, queue_capacity, n_replicas)] per deployment
      n_counters, n_histograms, bucket_bounds   metrics (histogram upper bounds, ascending)
    Keyword (each defaults to "nothing" or the contract's default):
      breakers        [(failure_threshold, open_s, max_open_s, half_open_probes)] per
                      deployment, written into every replica's breaker at creation
      replica_weights [[weight per replica]] per deployment (1..1e6, default 1): routing
                      load is in_flight / weight (``Segment.replicas(d)``)
      token_buckets   [(per_minute, burst)]: one token bucket each (``Segment.bucket(i)``),
                      refilled at per_minute/60 per second, holding at most ``burst``
      key_max_concurrency  [max_concurrency] per gateway key (0 = not limited): the keys'
                      concurrency counters and spend words (``Segment.key_concurrency(k)``,
                      ``Segment.key_spend(k)``)
      prefix_capacity [entries] per deployment (default 0 = no prefix index): block-chain
                      hashes -> replicas (``Segment.prefix(d)``), rounded up to sets of 8
      max_sessions    session affinity bindings (``Segment.sessions``; 1.5 slots each, in
                      stripes of 64); 0 = no table
    """

    def __init__(self, n_workers, deployments, n_counters, n_histograms, bucket_bounds, *,
                 breakers=None, replica_weights=None, token_buckets=(), key_max_concurrency=(),
                 prefix_capacity=None, max_sessions=0):
        self.n_workers = int(n_workers)
        self.deployments = [tuple(int(x) for x in d) for d in deployments]
        self.n_counters = int(n_counters)
        self.n_histograms = int(n_histograms)
        self.bucket_bounds = [float(b) for b in bucket_bounds]
        nd = len(self.deployments)
        self.breakers = _per_deployment(breakers, nd, DEFAULT_BREAKER, "breakers",
                                        lambda b: (int(b[0]), float(b[1]), float(b[2]), int(b[3])))
        if replica_weights is None:
            replica_weights = [[1] * d[2] if len(d) == 3 else [] for d in self.deployments]
        self.replica_weights = _per_deployment(replica_weights, nd, None, "replica_weights",
                                               lambda ws: [int(w) for w in ws])
        self.prefix_capacity = _per_deployment(prefix_capacity, nd, 0, "prefix_capacity", int)
        self.token_buckets = [(float(r), int(b)) for r, b in token_buckets]
        self.key_max_concurrency = [int(c) for c in key_max_concurrency]
        self.max_sessions = int(max_sessions)
        self._validate()

    def _validate(self):
        if not 1 <= self.n_workers <= MAX_WORKERS:
            raise ValueError(f"n_workers must be in 1..{MAX_WORKERS}")
        for i, d in enumerate(self.deployments):
            if len(d) != 3:
                raise ValueError(f"deployments[{i}]: expected (max_concurrency, queue_capacity, n_replicas)")
            mc, qc, nr = d
            if mc < 1 or qc < 0 or nr < 0 or mc + qc > MAX_POOL or mc >= 1 << 31 or qc >= 1 << 31:
                raise ValueError(f"deployments[{i}]: need max_concurrency >= 1, queue_capacity >= 0, "
                                 f"n_replicas >= 0, max_concurrency + queue_capacity < 2**24")
            if nr > MAX_REPLICAS:
                raise ValueError(f"deployments[{i}]: at most {MAX_REPLICAS} replicas per deployment")
        if self.n_counters < 0 or self.n_histograms < 0:
            raise ValueError("n_counters and n_histograms must be >= 0")
        for i, b in enumerate(self.bucket_bounds):
            if not math.isfinite(b):
                raise ValueError("bucket_bounds must be finite (+Inf is implicit)")
            if i and b <= self.bucket_bounds[i - 1]:
                raise ValueError("bucket_bounds must be strictly ascending")
        for i, (threshold, open_s, max_open_s, probes) in enumerate(self.breakers):
            if threshold < 1 or probes < 1:
                raise ValueError(f"breakers[{i}]: failure_threshold and half_open_probes must be >= 1")
            if not (0 <= open_s <= max_open_s) or not math.isfinite(max_open_s):
                raise ValueError(f"breakers[{i}]: need 0 <= open_s <= max_open_s (finite)")

        for i, (weights, d) in enumerate(zip(self.replica_weights, self.deployments)):
            if len(weights) != d[2] or any(not 1 <= w <= 1_000_000 for w in weights):
                raise ValueError(f"replica_weights[{i}]: one weight in 1..1000000 per replica")
        for i, (per_minute, burst) in enumerate(self.token_buckets):
            if not (0 < per_minute <= 6e10):
                raise ValueError(f"token_buckets[{i}]: per_minute must be in (0, 6e10]")
            if burst < 1 or burst * (60e9 / per_minute) > MAX_SPAN_NS:
                raise ValueError(f"token_buckets[{i}]: burst must be >= 1 and take at most "
                                 f"~36 years to refill")

        if any(not 0 <= c <= MAX_PREFIX for c in self.prefix_capacity):
            raise ValueError(f"prefix_capacity: each must be in 0..{MAX_PREFIX}")
        if not 0 <= self.max_sessions <= MAX_SESSIONS:
            raise ValueError(f"max_sessions must be in 0..{MAX_SESSIONS}")
        if any(not 0 <= c < 1 << 62 for c in self.key_max_concurrency):
            raise ValueError("key_max_concurrency: each must be >= 0 (0 = not limited)")

    def __eq__(self, other):
        return isinstance(other, Layout) and self._key() == other._key()

    def __hash__(self):
        return hash(repr(self._key()))

    def _key(self):
        return tuple(self.__dict__.items())

    def __repr__(self):
        return "Layout(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


def _per_deployment(values, n, default, name, convert):
    """One value per deployment: ``default`` for each when ``values`` is None."""
    if values is None:
        return [default] * n
    values = [convert(v) for v in values]
    if len(values) != n:
        raise ValueError(f"{name}: one entry per deployment expected ({n}), got {len(values)}")
    return values
