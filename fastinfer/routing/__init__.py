"""Routing: which replica of a deployment serves the next attempt.

Owns: the replica-selection policies (round robin, least loaded, power of two
choices, latency EWMA, weights) and this worker's view of replica load.
Must not touch: HTTP, providers, admission. It is told which replicas to
avoid (already tried, circuit open) and answers with a replica index.
"""
from .picker import ReplicaPicker

__all__ = ["ReplicaPicker"]
