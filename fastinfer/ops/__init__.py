"""Operating the gateway: who may use the admin API, the host's numbers as JSON, the dashboard.

Owns: admin authentication (the admin key or this run's one-time token, compared
in constant time; failed attempts throttled per client address, host-wide),
``/admin/stats`` (host totals read from the shared segment through ``Metrics``)
and the dashboard's static page. Beside the request path: nothing here runs per
data request.

Must not touch: routing, providers, the engine's attempt loop. HTTP handlers live
in ``gateway.admin``; this package gives them their answers.
"""
from .token import one_time_token


def __getattr__(name: str):
    # The supervisor imports this package for ``one_time_token`` only: what the workers use is imported
    # when they ask for it, so the supervisor stays without the limits (asyncio) and hashlib (libcrypto)
    if name in ("AdminAuth", "FailureThrottle"):
        from . import auth
        return getattr(auth, name)
    if name == "host_stats":
        from .stats import host_stats
        return host_stats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AdminAuth", "FailureThrottle", "host_stats", "one_time_token"]
