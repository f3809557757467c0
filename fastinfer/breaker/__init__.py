"""Circuit breakers: should this replica get an attempt now?

Owns: one host-wide breaker per (deployment, replica) over the shared
segment — configuring it from the deployment, asking it before an attempt,
and telling it every attempt's outcome. Must not touch: HTTP, providers,
which replica to prefer (routing asks, this answers).
"""
from .breakers import ALLOWED, PROBE, REJECTED, BreakerSet, deployment_breakers

__all__ = ["ALLOWED", "PROBE", "REJECTED", "BreakerSet", "deployment_breakers"]
