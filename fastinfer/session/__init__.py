"""Sessions: a replica's credential and its pool of upstream connections.

Owns: resolving credentials from their sources, one keep-alive connection pool
per replica, and swapping a replica's session atomically (in-flight requests
finish on the snapshot they started with). Must not touch: routing, retries,
request bodies.
"""
from .sessions import ReplicaSession, SessionRegistry

__all__ = ["ReplicaSession", "SessionRegistry"]
