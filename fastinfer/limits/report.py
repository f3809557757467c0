"""What the operator sees of the limits: ``GET /admin/keys`` and the limit parts of ``/admin/stats``.

Owns: shaping, from the host's live state (buckets, key concurrency, spend),
each key's limits, what is left of them, its spend and budget, and each
deployment's limits left. Reads only; never the key or its hash. Must not
touch: the request path, HTTP.
"""
from __future__ import annotations

from .quota import DeploymentLimits, KeyLimits, Limits, budget_state

_MICRO = 1_000_000


def _bucket_limit(limits: Limits, name: str, kind: str, bucket) -> dict:
    return {"name": name, "kind": kind, "limit": bucket.capacity, "remaining": limits.remaining(bucket)}


def key_limit_list(limits: Limits, key: KeyLimits) -> list[dict]:
    """The key's limits as the dashboard lists them: ``{"name", "kind", "limit", "remaining"}`` each."""
    out = [_bucket_limit(limits, name, kind, bucket)
           for name, kind, bucket in (("rpm", "requests", key.requests), ("tpm", "tokens", key.tokens))
           if bucket is not None]
    if key.concurrency.limit:
        out.append({"name": "max_concurrency", "kind": "concurrency", "limit": key.concurrency.limit,
                    "remaining": max(0, key.concurrency.limit - key.concurrency.in_flight)})
    return out


def deployment_limit_list(limits: Limits, dep: DeploymentLimits | None) -> list[dict]:
    """A deployment's ``rate_limit`` buckets as the dashboard lists them."""
    if dep is None:
        return []
    return [_bucket_limit(limits, name, kind, bucket)
            for name, kind, bucket in (("rpm", "requests", dep.requests), ("tpm", "tokens", dep.tokens))
            if bucket is not None]


def spend_usd(limits: Limits, key: KeyLimits) -> float:
    """What the key spent in its current budget period (its total without a budget)."""
    return limits.store.spent(key.index, limits.period_of(key)) / _MICRO


def describe_keys(limits: Limits) -> list[dict]:
    """``GET /admin/keys``: every key by name, its limits, what is left, its spend and budget."""
    out = []
    for key in limits.keys.values():
        config = key.config
        left = {item["kind"]: item["remaining"] for item in key_limit_list(limits, key)}
        out.append({
            "name": key.name,
            "models": list(config.models) or ["*"],
            "limits": {"rpm": config.rpm, "tpm": config.tpm, "max_concurrency": config.max_concurrency},
            "remaining": {"requests": left.get("requests"), "tokens": left.get("tokens"),
                          "concurrency": left.get("concurrency")},
            "in_flight": key.concurrency.in_flight,
            "priority": config.priority, "max_priority": config.max_priority,
            "spend_usd": spend_usd(limits, key),
            "budget": budget_state(limits, key),
        })
    return out
