"""Sizes of a host-wide shared-memory segment: the one ``Layout`` that the
compiled core (``fastinfer._core.shm``) and its pure-Python reference
(``fastinfer._core.ref.shm``) both use and re-export.

Owns: validating the sizes a segment is created with, and a plain value that
pickles, compares and hashes. It is built once per segment (supervisor start,
``Segment.attach``), never per request, so it stays plain Python.

Must not touch: shared memory, configuration parsing. Only ints and floats.
"""
from __future__ import annotations

import math

__all__ = ["Layout", "MAX_POOL"]

MAX_POOL = (1 << 24) - 1   # max_concurrency + queue_capacity of one deployment: 24-bit entry indices


class Layout:
    """Sizes of a segment. Plain, picklable, comparable."""

    def __init__(self, n_workers, deployments, n_counters, n_histograms, bucket_bounds):
        self.n_workers = int(n_workers)
        self.deployments = [tuple(int(x) for x in d) for d in deployments]
        self.n_counters = int(n_counters)
        self.n_histograms = int(n_histograms)
        self.bucket_bounds = [float(b) for b in bucket_bounds]
        if not 1 <= self.n_workers <= 4096:
            raise ValueError("n_workers must be in 1..4096")
        for i, d in enumerate(self.deployments):
            if len(d) != 3:
                raise ValueError(f"deployments[{i}]: expected (max_concurrency, queue_capacity, n_replicas)")
            mc, qc, nr = d
            if mc < 1 or qc < 0 or nr < 0 or mc + qc > MAX_POOL or mc >= 1 << 31 or qc >= 1 << 31:
                raise ValueError(f"deployments[{i}]: need max_concurrency >= 1, queue_capacity >= 0, "
                                 f"n_replicas >= 0, max_concurrency + queue_capacity < 2**24")
        if self.n_counters < 0 or self.n_histograms < 0:
            raise ValueError("n_counters and n_histograms must be >= 0")
        for i, b in enumerate(self.bucket_bounds):
            if not math.isfinite(b):
                raise ValueError("bucket_bounds must be finite (+Inf is implicit)")
            if i and b <= self.bucket_bounds[i - 1]:
                raise ValueError("bucket_bounds must be strictly ascending")

    def __eq__(self, other):
        return isinstance(other, Layout) and self._key() == other._key()

    def __hash__(self):
        return hash(repr(self._key()))

    def _key(self):
        return (self.n_workers, self.deployments, self.n_counters, self.n_histograms, self.bucket_bounds)

    def __repr__(self):
        return (f"Layout(n_workers={self.n_workers}, deployments={self.deployments}, "
                f"n_counters={self.n_counters}, n_histograms={self.n_histograms}, "
                f"bucket_bounds={self.bucket_bounds})")
