"""``GET /admin/stats``: the host's totals as JSON, for the dashboard and for scripts.

Owns: reading every counter, histogram and gauge of the shared segment through
``Metrics`` (whichever worker answers, the numbers are the whole host's) and
shaping them per deployment, per replica and per key. The dashboard reads only
this; it never parses Prometheus text.

Shape (every count is a host total since start, carried over reloads where
``/metrics`` carries it; rates are the reader's deltas between snapshots)::

    {"ts": unix seconds, "pid": answering worker,
     "buckets": [histogram upper bounds, ascending; +Inf implicit],
     "deployments": [{
        "name", "provider", "model", "routing", "max_concurrency", "queue_capacity",
        "on_capacity_exhausted", "fallbacks": [names],
        "in_flight", "queue_depth",                      # host-wide gauges
        "requests": {"total": n, "by_code": {"200": n, ...}},   # non-zero codes only
        "retries": n, "fallbacks_taken": {"to-name": n}, "rejected": {"reason": n},
        "tokens": {"input": n, "output": n, "cached": n}, "cost_usd": x, "usage_estimated": n,
        "session_rebuilds": {"cause": n},
        "histograms": {"request_duration_seconds" | "ttft_seconds" | "overhead_seconds":
                       {"cumulative": [n per bucket, then +Inf], "count": n, "sum": seconds}},
        "limits": [{"name": "rpm" | "tpm", "kind": "requests" | "tokens", "limit", "remaining"}],
        "replicas": [{"name", "base_url" (password masked), "weight",
                      "circuit": {"state": "closed|open|half_open", "retry_after_s", "consecutive_failures"},
                      "upstream": {"outcome": n},        # non-zero outcomes only
                      "in_flight": n,                    # host-wide, every worker's attempts
                      "healthy": bool}]}],               # health checks pass (or none) and circuit not open
     "unrouted": {"404": n, ...},                        # answers that named no deployment
     "keys": [{"name", "requests": {"total", "by_code"}, "tokens": {"input", "output", "cached"},
               "cost_usd": x,                              # since start, as the key_* metrics
               "spend_usd": x,                             # in the current budget period
               "limits": [{"name", "kind", "limit", "remaining"}],   # rpm, tpm, max_concurrency
               "budget": {"usd", "period", "spent_usd", "remaining_usd", "resets_at"} | null}],
     "workers": [{"worker": "0", "serving": bool,          # its worker accepts connections now
                  "requests": n,                           # HTTP requests it received, every route
                  "connections_rebalanced": n,             # connections let go: it held more than its share
                  "gc_collections": n, "gc_collected_objects": n,   # its cyclic GC's runs, the cycles they freed
                  "connections": n, "resident_memory_bytes": n, "open_fds": n,
                  "event_loop_lag_seconds": x,             # gauges its worker publishes each second
                  "restarts": {"died": n, "failed_to_start": n}}]}   # workers replaced in its slot

``limits`` and ``keys`` are empty when nothing is limited and no key exists (the page
shows "none configured").

Must not touch: configuration files, the engine's request path. Reads only.
"""
from __future__ import annotations

import os
import time

from .._core.constants import BREAKER_STATE_NAMES
from ..config import Config
from ..limits.quota import budget_state
from ..limits.report import deployment_limit_list, key_limit_list, spend_usd
from ..metrics.registry import (BUCKETS, COST_SCALE, GAUGE_SCALE, HISTOGRAMS, RESTART_REASONS, TOKEN_DIRECTIONS,
                                UNKNOWN_DEPLOYMENT, WORKER_GAUGES, WORKER_GC_COUNTERS)
from ..redact import mask_url


def host_stats(metrics, config: Config, limits=None) -> dict:
    """The JSON document above, from one snapshot of the host's counters (``limits``: the
    worker's ``limits.Limits``, for what is left of each limit)."""
    deployments = {d.name: _deployment(d, metrics) for d in config.deployments}
    keys = {k.name: _key(k.name) for k in config.keys}
    unrouted: dict[str, int] = {}
    workers = {w: _worker(w) for w in metrics.layout.workers}
    values = metrics.counters.snapshot()
    for (metric, labels), value in zip(metrics.layout.counter_keys, values):
        if metric.startswith(_WORKER_WORDS):
            _count_worker(workers[labels[0]], metric, labels, value)
            continue
        if metric.startswith("_"):
            continue
        if metric.startswith("key_"):
            _count_key(keys[labels[0]], metric, labels, value)
            continue
        if metric == "requests_total" and labels[0] == UNKNOWN_DEPLOYMENT:
            if value:
                unrouted[labels[1]] = value
            continue
        entry = deployments.get(labels[0])
        if entry is not None:
            _count(entry, metric, labels, value)
    for i, (name, entry) in enumerate(deployments.items()):
        entry["requests"]["total"] = sum(entry["requests"]["by_code"].values())
        entry["histograms"] = _histograms(metrics, name)
        if limits is not None:
            entry["limits"] = deployment_limit_list(limits, limits.deployments[i])
    for name, entry in keys.items():
        entry["requests"]["total"] = sum(entry["requests"]["by_code"].values())
        if limits is not None:
            key = limits.keys[name]
            entry.update(spend_usd=spend_usd(limits, key), limits=key_limit_list(limits, key),
                         budget=budget_state(limits, key))
    return {"ts": time.time(), "pid": os.getpid(), "buckets": list(BUCKETS),
            "deployments": list(deployments.values()), "unrouted": unrouted, "keys": list(keys.values()),
            "workers": list(workers.values())}


def _worker(name: str) -> dict:
    return {"worker": name, "serving": False, "requests": 0, "connections_rebalanced": 0,
            **dict.fromkeys(_WORKER_GC_FIELDS.values(), 0),
            **dict.fromkeys(_WORKER_GAUGES, 0),
            "restarts": dict.fromkeys(RESTART_REASONS, 0)}


def _count_worker(entry: dict, metric: str, labels: tuple, value: int) -> None:
    if metric == "_worker_serving":
        entry["serving"] = bool(value)
    elif metric == "worker_requests_total":
        entry["requests"] = value
    elif metric == "worker_connections_rebalanced_total":
        entry["connections_rebalanced"] = value
    elif metric in _WORKER_GC_FIELDS:
        entry[_WORKER_GC_FIELDS[metric]] = value
    elif metric == "worker_restarts_total":
        entry["restarts"][labels[1]] = value
    else:
        gauge = metric[len("worker_"):]
        entry[gauge] = value / GAUGE_SCALE[metric] if metric in GAUGE_SCALE else value


# the per-worker words: its own series, its slot's restarts, and whether it serves
_WORKER_WORDS = ("worker_", "_worker_serving")
_WORKER_GAUGES = tuple(g[len("worker_"):] for g in WORKER_GAUGES)
# worker_gc_collections_total -> gc_collections: the counters' names in a worker's entry
_WORKER_GC_FIELDS = {c: c[len("worker_"):-len("_total")] for c in WORKER_GC_COUNTERS}


def _key(name: str) -> dict:
    return {"name": name, "requests": {"total": 0, "by_code": {}}, "tokens": dict.fromkeys(TOKEN_DIRECTIONS, 0),
            "cost_usd": 0.0, "spend_usd": 0.0, "limits": [], "budget": None}


def _count_key(entry: dict, metric: str, labels: tuple, value: int) -> None:
    if metric == "key_requests_total":
        if value:
            entry["requests"]["by_code"][labels[1]] = value
    elif metric == "key_tokens_total":
        entry["tokens"][labels[1]] = value
    elif metric == "key_cost_usd_total":
        entry["cost_usd"] = value / COST_SCALE


def _deployment(d, metrics) -> dict:
    admission = metrics.admission(d.name)
    in_flight, queue_depth = admission.counts() if admission is not None else (0, 0)
    breakers = metrics.breakers(d.name)
    load = metrics.replica_load(d.name)
    replicas = []
    for i, r in enumerate(d.replicas):
        replica = {"name": r.name, "base_url": mask_url(r.base_url), "weight": r.weight, "circuit": None,
                   "upstream": {}, "in_flight": load.in_flight(i), "healthy": metrics.replica_healthy(d.name, i, load)}
        if i < len(breakers):
            b = breakers[i]
            replica["circuit"] = {"state": BREAKER_STATE_NAMES[b.state], "retry_after_s": round(b.retry_after_s, 3),
                                  "consecutive_failures": b.consecutive_failures}
        replicas.append(replica)
    return {
        "name": d.name, "provider": d.provider, "model": d.upstream_model, "routing": d.routing,
        "max_concurrency": d.max_concurrency, "queue_capacity": d.queue_capacity,
        "on_capacity_exhausted": d.on_capacity_exhausted, "fallbacks": list(d.fallbacks),
        "in_flight": in_flight, "queue_depth": queue_depth,
        "requests": {"total": 0, "by_code": {}}, "retries": 0, "fallbacks_taken": {}, "rejected": {},
        "tokens": dict.fromkeys(TOKEN_DIRECTIONS, 0), "cost_usd": 0.0, "usage_estimated": 0,
        "session_rebuilds": {}, "histograms": {}, "limits": [], "replicas": replicas,
    }


def _count(entry: dict, metric: str, labels: tuple, value: int) -> None:
    """Put one counter's value where it belongs in its deployment's entry."""
    if metric == "requests_total":
        if value:
            entry["requests"]["by_code"][labels[1]] = value
    elif metric == "upstream_requests_total":
        if value:
            replica = next(r for r in entry["replicas"] if r["name"] == labels[1])
            replica["upstream"][labels[2]] = value
    elif metric == "retries_total":
        entry["retries"] = value
    elif metric == "fallbacks_total":
        entry["fallbacks_taken"][labels[1]] = value
    elif metric == "rejected_total":
        if value:
            entry["rejected"][labels[1]] = value
    elif metric == "tokens_total":
        entry["tokens"][labels[1]] = value
    elif metric == "cost_usd_total":
        entry["cost_usd"] = value / COST_SCALE
    elif metric == "usage_estimated_total":
        entry["usage_estimated"] = value
    elif metric == "session_rebuilds_total":
        if value:
            entry["session_rebuilds"][labels[1]] = value


def _histograms(metrics, deployment: str) -> dict:
    out = {}
    for histogram in HISTOGRAMS:
        index = metrics.layout.histogram_index.get((histogram, deployment))
        if index is None:
            continue
        cumulative, count, total = metrics.histograms.snapshot(index)
        out[histogram] = {"cumulative": [int(c) for c in cumulative], "count": int(count), "sum": float(total)}
    return out
