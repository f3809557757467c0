"""What the operator sees of the engine: /admin/state and readiness. Reads only; never a secret."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._core.constants import BREAKER_STATE_NAMES, OPEN, PRIORITY_NAMES
from ..redact import mask_url

if TYPE_CHECKING:
    from .engine import Engine


def describe_state(engine: "Engine") -> dict:
    """What /admin/state shows: per deployment, its load and each replica's circuit (no secrets)."""
    out = []
    for dep in engine.deployments.values():
        cfg = dep.config
        entry = {"name": cfg.name, "provider": cfg.provider, "model": cfg.upstream_model,
                 "routing": cfg.routing, "max_concurrency": cfg.max_concurrency,
                 "queue_capacity": cfg.queue_capacity, "on_capacity_exhausted": cfg.on_capacity_exhausted,
                 "fallbacks": cfg.fallbacks, "replicas": []}
        # as the gauges show it: a request waiting for the deployment's rate limit is queued too
        admission = engine.metrics.admission(cfg.name)
        if admission is None:       # an engine made without the worker's gauges (tests)
            admission = engine.admission.admissions[dep.index]
        in_flight, depth = admission.counts()
        entry.update(in_flight=in_flight, queue_depth=depth,
                     queue_by_priority=dict(zip(PRIORITY_NAMES,
                                                admission.queue_depth_by_priority())))
        entry.update(aliases=cfg.aliases, session=_session_state(engine, dep))
        load = dep.router.load
        for i, replica in enumerate(cfg.replicas):
            r = {"name": replica.name, "base_url": mask_url(replica.base_url), "weight": replica.weight,
                 "credential": replica.credential.describe() if replica.credential else None,
                 "in_flight": load.in_flight(i), "in_flight_here": load.held_by(dep.router.worker, i),
                 "latency_ewma_s": round(load.latency_s(i), 6)}
            b = dep.breakers.breakers[i]
            r["circuit"] = {"state": BREAKER_STATE_NAMES[b.state],
                            "retry_after_s": round(b.retry_after_s, 3),
                            "consecutive_failures": b.consecutive_failures,
                            "probes_in_flight": b.probes_in_flight,
                            "transitions": dict(zip(BREAKER_STATE_NAMES, b.transitions))}
            # the active view (health checks) beside the passive one (the circuit); both must allow traffic
            r["health"] = {"checked": cfg.health_check is not None, "healthy": load.healthy(i)}
            r["healthy"] = engine.metrics.replica_healthy(cfg.name, i, load)
            entry["replicas"].append(r)
        out.append(entry)
    table = engine.affinity.segment.sessions
    return {"deployments": out, "sessions": {"bindings": table.occupancy, "max_sessions": table.max_sessions,
                                             "evictions": table.evictions}}


def _session_state(engine: "Engine", dep) -> dict | None:
    """A sticky or prefix deployment's affinity settings and state; None for the load policies."""
    cfg = dep.config
    if cfg.routing == "sticky":
        return {"affinity_ttl_s": cfg.session.affinity_ttl_s, "backend_sessions": cfg.session.backend_sessions,
                "backend_sessions_open": engine.metrics.backend_sessions_open(cfg.name)}
    if cfg.routing == "prefix":
        index = dep.router.prefix
        return {"prefix_index": {"entries": index.occupancy, "capacity": index.capacity, "bytes": index.nbytes}}
    return None


def is_ready(engine: "Engine") -> bool:
    """Every deployment has at least one replica whose circuit is not open."""
    return all(any(b.state != OPEN for b in dep.breakers.breakers) for dep in engine.deployments.values())
