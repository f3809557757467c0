"""Metrics: the contract's Prometheus series, kept host-wide in shared memory.

Owns: the mapping of every (metric, labels) series to a slot of the shared
segment's counters and histograms — computed from the config and the worker
count alone, so every worker derives the same map — the recording calls the
gateway, engine and workers make, and the Prometheus text rendering (a
``# HELP`` and ``# TYPE`` for every family). Per-worker gauges (connections,
memory, open fds, event-loop lag) are segment words each worker sets for
itself; the host-wide gauges (queue depth, in flight, circuit state) are read
from the admission and breaker structures at scrape time. Must not touch:
HTTP, request handling.
"""
from .registry import (BUCKETS, OPERATOR_ROUTES, OUTCOMES, REJECT_REASONS, WORKER_GAUGES, WORKER_GC_COUNTERS, Metrics,
                       MetricsLayout, WorkerSeries)

__all__ = ["BUCKETS", "Metrics", "MetricsLayout", "OPERATOR_ROUTES", "OUTCOMES", "REJECT_REASONS", "WORKER_GAUGES",
           "WORKER_GC_COUNTERS", "WorkerSeries"]
