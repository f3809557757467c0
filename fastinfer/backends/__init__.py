"""Backends: the upstream servers' own control plane, beside the generation requests.

Owns: control calls to a replica's server root with the replica's credential,
connection pool, timeouts and circuit breaker (``control``); backend sessions,
the SGLang / Dynamo lifecycle -- ``open_session`` before a session's first
request on a replica, ``session_params`` in each of its requests, one
``close_session`` per opened session whatever ends it (``sessions``); active
health checks (``health``); and running the host's background work once per
host, under a lease of the shared segment (``hostwork``).

Must not touch: choosing replicas (``routing`` decides; this package hears of
every binding that leaves a replica), the client connection, retries.
"""
from .control import ReplicaControl, server_root
from .health import HealthProber
from .hostwork import run_under_lease
from .sessions import BackendSessions

__all__ = ["BackendSessions", "HealthProber", "ReplicaControl", "run_under_lease", "server_root"]
