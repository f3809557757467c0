"""Metrics: the contract's Prometheus series, kept host-wide in shared memory.

Owns: the mapping of every (metric, labels) series to a slot of the shared
segment's counters and histograms — computed from the config alone, so every
worker derives the same map — the recording calls the engine and gateway
make, and the Prometheus text rendering. Gauges (queue depth, in flight,
circuit state) are read from the admission and breaker structures at scrape
time. Must not touch: HTTP, request handling.
"""
from .registry import BUCKETS, OUTCOMES, REJECT_REASONS, Metrics, MetricsLayout

__all__ = ["BUCKETS", "Metrics", "MetricsLayout", "OUTCOMES", "REJECT_REASONS"]
