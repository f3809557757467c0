"""The ``LimitStore`` of a host in a cluster: what the request path takes from.

- ``approximate``, Redis up or ``local_share``: the segment's own call
  (``take`` *is* ``Segment.take_all``): not one Redis command on the request
  path; the sync makes the local buckets hold only what other hosts left.
- ``strict``: ``take_async`` runs the TAKE script (one round trip) for every
  admission under a limit; a correction is sent to Redis off the request path.
  The segment's buckets mirror Redis (the sync copies levels every interval),
  for the ``x-ratelimit-*`` headers and for the local share while Redis is away.
- Redis down (``state.DOWN``): ``local_share`` takes from the segment (the
  sync keeps it at this host's share), ``fail_open`` admits without limits,
  ``fail_closed`` answers 503.

Must not touch: Redis outside ``strict``'s calls, the sync's bookkeeping.
"""
from __future__ import annotations

import asyncio
import logging

from ..errors import Overloaded
from ..limits.store import LimitStore, LocalStore
from .client import REDIS_DOWN
from .state import DOWN, UP

log = logging.getLogger("fastinfer.cluster")
_ALWAYS = (True, 0.0)


class ClusterUnavailable(Overloaded):
    """``on_redis_down = "fail_closed"`` and Redis is down: a limited request is refused (503)."""

    code = "cluster_unavailable"


class ClusterStore(LocalStore):
    """The segment's buckets and spend, shared with other hosts per ``[cluster]``."""

    def __init__(self, segment, n_buckets: int, n_keys: int, cluster, state, strict=None):
        """``state``: the host's ``ClusterState``; ``strict``: this worker's ``StrictBuckets`` (strict mode)."""
        super().__init__(segment, n_buckets, n_keys)
        self.cluster = cluster
        self.state = state
        self.strict = strict
        self._local_take = segment.take_all
        self._state_word = state.state_word
        self._counters = state.counters
        self._pending: set[asyncio.Task] = set()
        if strict is not None:
            self.synchronous = False
        if strict is not None or cluster.on_redis_down != "local_share":
            self.take = self._take_checked

    # the request path's pairs go through take and adjust below, not straight to the segment
    bucket_pair = LimitStore.bucket_pair

    def _redis_down(self) -> bool:
        """Down since the sync last failed; before its first exchange (a second at most) Redis is
        presumed up: strict mode asks it, the others count locally."""
        return self._counters.get(self._state_word) == DOWN

    def _take_down(self, ids, amounts) -> tuple[bool, float]:
        """Redis is away: per ``on_redis_down``."""
        policy = self.cluster.on_redis_down
        if policy == "fail_open":
            return _ALWAYS
        if policy == "fail_closed":
            raise ClusterUnavailable("Rate limits are shared through Redis, which is unreachable, and "
                                     "cluster.on_redis_down is fail_closed: limited requests are refused "
                                     "until it is back.", retry_after=1.0)
        return self._local_take(ids, amounts)

    def _take_checked(self, ids, amounts) -> tuple[bool, float]:
        if self._redis_down():
            return self._take_down(ids, amounts)
        return self._local_take(ids, amounts)

    async def take_async(self, ids, amounts) -> tuple[bool, float]:
        if self.strict is None or self._redis_down():
            return self.take(ids, amounts)
        try:
            result = await self.strict.take(ids, amounts)
        except REDIS_DOWN:
            # the sync notices and says so once; this request goes on per on_redis_down
            return self._take_down(ids, amounts)
        if result[0]:
            for i, n in zip(ids, amounts):       # the mirror, for headers until the next sync
                self.buckets[i].charge(n)
        return result

    def adjust(self, bucket: int, delta: int) -> None:
        super().adjust(bucket, delta)
        if self.strict is not None and delta and self._counters.get(self._state_word) == UP:
            task = asyncio.get_running_loop().create_task(self._adjust_in_redis(bucket, delta))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _adjust_in_redis(self, bucket: int, delta: int) -> None:
        try:
            await self.strict.adjust(bucket, delta)
        except REDIS_DOWN:
            pass      # Redis is away: the sync says so; the bucket refills meanwhile

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
