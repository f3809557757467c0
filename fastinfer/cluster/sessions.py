"""Sticky sessions bound across hosts: the session directory of a host in a cluster.

Owns: ``RedisSessionDirectory``, the shared implementation of the routing
layer's ``SessionDirectory`` seam (``claim`` / ``moved`` / ``touched`` /
``ended``; see ``routing.directory``). A session's binding is one Redis key,
``{prefix}:session:{session key hex}``, holding the replica's name, with the
session's idle TTL:

- ``claim`` (a host that has no live binding, before it binds one) is one
  atomic script: SET NX with the TTL — the first binding wins — or, when the
  key exists, refresh its TTL and answer the replica it holds;
- ``moved`` (a re-pin) and ``ended`` (close, DELETE, expiry) are sent at once,
  off the request path; ``touched`` (every routed request) is batched: one
  pipeline of PEXPIREs per worker every ``TOUCH_BATCH_S``, never a command per
  request;
- Redis down (the host's ``ClusterState``) or slow: ``claim`` answers the
  proposal (the host binds alone, as without a cluster), the others are dropped.

Must not touch: the session table, routing decisions, HTTP.
"""
from __future__ import annotations

import asyncio

from .client import REDIS_DOWN
from .state import DOWN

TOUCH_BATCH_S = 0.05

# KEYS[1]: the binding; ARGV: the proposed replica, the TTL in ms
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('GET', KEYS[1])
"""


def _ms(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


class RedisSessionDirectory:
    """Bindings shared by every host on one Redis; first binding wins."""

    shared = True

    def __init__(self, client, keys, state):
        """``client``: the worker's Redis client; ``keys``: ``client.Keys``; ``state``: ``ClusterState``."""
        self.client = client
        self.keys = keys
        self.state = state
        self._claim = client.register_script(CLAIM)
        self._touches: dict[str, int] = {}
        self._flush_due = False
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    def _down(self) -> bool:
        return self.state.state == DOWN

    async def claim(self, key: bytes, deployment: str, replica: str, ttl_s: float) -> str:
        if self._down():
            return replica
        try:
            return await self._claim(keys=[self.keys.session(key)], args=[replica, _ms(ttl_s)]) or replica
        except REDIS_DOWN:
            return replica          # bound on this host alone; the sync says Redis is away, once

    def moved(self, key: bytes, deployment: str, replica: str, ttl_s: float) -> None:
        self._send(self.client.set(self.keys.session(key), replica, px=_ms(ttl_s)))

    def ended(self, key: bytes) -> None:
        name = self.keys.session(key)
        self._touches.pop(name, None)
        self._send(self.client.delete(name))

    def touched(self, key: bytes, ttl_s: float) -> None:
        self._touches[self.keys.session(key)] = _ms(ttl_s)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(TOUCH_BATCH_S, self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        touches, self._touches = self._touches, {}
        if not touches:
            return
        pipe = self.client.pipeline(transaction=False)
        for name, ms in touches.items():
            pipe.pexpire(name, ms)
        self._send(pipe.execute())

    def _send(self, command) -> None:
        """Run a Redis command in the background; when Redis is away it is dropped (the binding
        then lives on this host only, and expires in Redis by itself). So is one sent after
        ``close`` (a draining worker's Redis pool is closing)."""
        if self._closed or self._down():
            command.close()
            return
        task = asyncio.get_running_loop().create_task(self._quietly(command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(command) -> None:
        try:
            await command
        except REDIS_DOWN:
            pass

    async def close(self) -> None:
        """Send what is queued and wait for it; later calls are dropped (the bindings expire in Redis)."""
        self._flush()
        self._closed = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
