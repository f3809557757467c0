"""A deployment's replica breakers, as this worker uses them.

The breakers live in the host's segment and were configured from the
deployment's ``circuit_breaker`` when the segment was created (supervisor start
or reload): a worker that starts or restarts only looks them up, so it never
resets the state or the grown open time the host's other workers have built.
What the engine asks of them on every request (``check``, ``record``,
``all_open``, ``retry_after_s``) is one compiled call each: the segment's
``BreakerSet`` (``_core/shm_breaker.pxi``; reference ``_core/ref/shm.py``).
"""
from __future__ import annotations

from .._core.constants import ALLOWED, PROBE, REJECTED
from .._core.shm import BreakerSet
from ..config import DeploymentConfig

__all__ = ["ALLOWED", "PROBE", "REJECTED", "BreakerSet", "deployment_breakers"]


def deployment_breakers(segment, index: int, deployment: DeploymentConfig, worker: int) -> BreakerSet:
    """Deployment ``index``'s breakers, one per replica, as worker ``worker`` asks and tells them:
    ``check(replica)`` (ALLOWED, REJECTED, or PROBE: a half-open trial the caller must report),
    ``record(replica, probe, failed)`` (True counted failure, False success, None no verdict),
    ``all_open()``, ``retry_after_s()``."""
    return segment.breaker_set(index, len(deployment.replicas), worker)
