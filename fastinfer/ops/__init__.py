"""Operating the gateway: who may use the admin API, the host's numbers as JSON, the dashboard.

Owns: admin authentication (the admin key or this run's one-time token, compared
in constant time; failed attempts throttled per client address, host-wide),
``/admin/stats`` (host totals read from the shared segment through ``Metrics``)
and the dashboard's static page. Beside the request path: nothing here runs per
data request.

Must not touch: routing, providers, the engine's attempt loop. HTTP handlers live
in ``gateway.admin``; this package gives them their answers.
"""
from .auth import AdminAuth, FailureThrottle, one_time_token
from .stats import host_stats

__all__ = ["AdminAuth", "FailureThrottle", "host_stats", "one_time_token"]
