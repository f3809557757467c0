"""Cluster: limits and budgets shared by several gateway hosts through Redis (``[cluster]``).

Owns: the Redis client of each worker (``client``), the host's view of the
cluster kept in the shared segment (``state``: Redis up or down, live nodes,
the epoch, the spend applied from other hosts; their use of a bucket is the
bucket's own ``remote``), the background exchange that runs once per
host under ``LEASE_CLUSTER_SYNC`` (``sync``: heartbeats, per-node G-counters,
shared spend, the local share while Redis is away), the exact admission of
``strict`` mode (``strict``: one Lua script per admission), and the
``LimitStore`` the request path uses (``store``).

Must not touch: HTTP, routing, providers, which limits a request draws on
(``limits.quota``'s).
"""
