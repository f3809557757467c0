"""One Redis connection pool per worker process, and the names of the keys the cluster writes.

Owns: building the asyncio client (redis-py; hiredis parses replies when
installed) with short timeouts, so an outage is noticed in well under a second
and never by a request hanging; and ``Keys``, every Redis key name. Must not
touch: what is stored under those keys (``sync``, ``strict``).

The client is made inside the worker, after the fork: a pool must never be
shared by two processes.
"""
from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError, RedisError

# what a Redis call may raise when Redis is away, slow or restarting
REDIS_DOWN = (RedisError, OSError, TimeoutError)


def connect(cluster) -> "redis.Redis":
    """The worker's client for ``cluster`` (a ``ClusterConfig``)."""
    timeout = cluster.timeout_ms / 1000
    return redis.Redis.from_url(
        cluster.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=64,
        decode_responses=True,
        retry_on_timeout=False,
        # a pooled connection Redis closed (it restarted, or dropped an idle client) fails the next
        # command on it: sent again at once on a new connection. A timeout is not retried: Redis
        # may have run the command, and an outage must show within one timeout
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0,
    )


class Keys:
    """Redis key names, all under ``cluster.key_prefix`` so clusters can share a Redis."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes = f"{prefix}:nodes"                       # set of node ids ever seen

    def heartbeat(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"                  # string with a TTL: the node is live

    def usage(self, name: tuple[str, str, str]) -> str:
        """Hash of a limit's per-node counters (field: node id, value "epoch:net units")."""
        return f"{self.prefix}:usage:{':'.join(name)}"

    def level(self, name: tuple[str, str, str]) -> str:
        """Approximate mode: hash of a limit's per-node levels (field: node id, value: the wall-clock
        ms at which that node's bucket is full again), read by a node that starts afresh."""
        return f"{self.prefix}:level:{':'.join(name)}"

    def bucket(self, name: tuple[str, str, str]) -> str:
        """Strict mode: a limit's theoretical arrival time (µs, Redis clock)."""
        return f"{self.prefix}:tat:{':'.join(name)}"

    def session(self, key: bytes) -> str:
        """A sticky session's binding (value: the replica's name), with the session's idle TTL."""
        return f"{self.prefix}:session:{key.hex()}"

    def spend(self, key: str, period_kind: str, period: int) -> str:
        """Hash of a key's spend in one period (field: node id, value micro-USD)."""
        return f"{self.prefix}:spend:{key}:{period_kind}:{period}"
