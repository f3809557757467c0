"""The exchange with Redis, once per host: heartbeats, per-node counters, shared spend, the local share.

Owns: the loop that runs in whichever worker holds ``LEASE_CLUSTER_SYNC``,
every ``sync_interval_ms``:

- heartbeat: ``{prefix}:node:{id}`` with a TTL, the id in ``{prefix}:nodes``;
  the live nodes are those whose heartbeat has not expired;
- approximate mode, per limit: a Redis hash (``{prefix}:usage:{scope}:{name}:{kind}``)
  with one field per node holding that node's own net consumption since its
  epoch (a G-counter per node: each node writes only its own field, so no write
  is ever lost or merged): the bucket's own use (``store.own_usage``). What
  another node consumed since the last exchange (net: a token correction may
  lower it) is charged to the local bucket through the store's remote seam
  (``add_remote_usage`` / ``refund_remote_usage``), so the host's buckets hold
  only what the cluster left and never publish another node's use as their
  own. A reload carries the epoch and both use counters into the new segment,
  so the node's counters go on. The buckets refill continuously (GCRA): there
  is no window;
- approximate mode, levels: a second hash per limit
  (``{prefix}:level:{scope}:{name}:{kind}``), one field per node: the wall-clock
  ms at which that node's bucket is full again (its level, refill included).
  A node that starts with a new segment (a restart, not a reload) reads them
  before its first exchange and lowers each bucket to the lowest level any
  record shows now, less what it used since it started: what it and the others
  used before the restart is not forgotten. The lowering is charged as remote
  use (never published as this node's own);
- strict mode: the local buckets are set to Redis's levels (the mirror the
  headers and the local share use; a bucket Redis lost is seeded from it);
- spend: a hash per key and budget period, one field per node (its own spend
  in the period); the others' total is added to the local spend, and at each
  (re)connection a node takes back its own field (its spend survives a restart);
- Redis down: one log line, ``fastinfer_cluster_redis_up`` 0, and under
  ``local_share`` each bucket is held to 1/N of the limit (N: live nodes when
  Redis was last seen) by charging it, as remote use, the refill the other N-1
  are assumed to use; when Redis is back, one log line and those assumptions
  are given back (``refund_remote_usage``) once the real counts are applied.

Must not touch: the request path (nothing here runs per request), HTTP.
"""
from __future__ import annotations

import asyncio
import logging
import time

from .._core.constants import LEASE_CLUSTER_SYNC
from ..aio import cancel_and_wait
from ..limits.periods import period_at
from ..redact import mask_url
from .client import REDIS_DOWN, Keys
from .state import DOWN, UP

log = logging.getLogger("fastinfer.cluster")
_MICRO = 1_000_000
_USAGE_TTL_S = 86_400              # a limit's counters outlive a quiet day, not a removed limit
_SPEND_TTL_S = 40 * 86_400         # longer than the longest calendar period


class ClusterSync:
    """The host's exchange with Redis; started in every worker, working only in the lease holder."""

    def __init__(self, cluster, client, state, store, *, segment, worker: int, buckets: dict, keys: dict,
                 periods: dict[str, str], strict=None):
        """``buckets``: name -> bucket index; ``keys``: key name -> index; ``periods``: key name -> the
        period its spend is kept in; ``strict``: ``StrictBuckets`` in strict mode."""
        self.cluster = cluster
        self.client = client
        self.state = state
        self.store = store
        self.lease = segment.lease(LEASE_CLUSTER_SYNC)
        self.worker = worker
        self.names = list(buckets)
        self.bucket_ids = list(buckets.values())
        self.keys = keys
        self.periods = periods
        self.strict = strict
        self.node = cluster.node_id
        self.redis_keys = Keys(cluster.key_prefix)
        self.interval_s = cluster.sync_interval_ms / 1000
        self.heartbeat_ms = max(5 * cluster.sync_interval_ms, 1500)
        # the other nodes' counters as last applied: (bucket name, node) -> (epoch, net)
        # (per worker: a new holder of the lease sees each counter afresh and applies from there)
        self._seen: dict[tuple, tuple[str, int]] = {}
        self._members: list[str] = [self.node]
        self._assumed = [0] * len(self.bucket_ids)     # local share charges while Redis is away
        self._holding = False
        self._settled = False
        self._fresh: bool | None = None      # the segment had no epoch at this worker's first settle
        self._task: asyncio.Task | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop exchanging (a draining worker); another worker, or the next start, takes over."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.lease.release(self.worker)
        await self.store.close()
        await self.client.aclose()

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            elapsed, last = now - last, now
            if not self.lease.try_hold(self.worker, max(3 * self.interval_s, 1.0)):
                self._holding = False
                continue
            if not self._holding:        # a new holder: counts seen by another worker are not ours
                self._holding = True
                self._seen.clear()
            await self.tick(elapsed)

    async def tick(self, elapsed: float) -> None:
        """One exchange; on failure, the state goes down and the local share applies for ``elapsed``."""
        was = self.state.state
        timeout = self.cluster.timeout_ms / 1000 * 4
        try:
            if not self._settled:    # this host started, or a reload made a new segment
                await asyncio.wait_for(self._settle(), timeout)
            await asyncio.wait_for(self._exchange(), timeout)
        except REDIS_DOWN as e:
            self._went_down(e)
            if self.cluster.on_redis_down == "local_share":
                self._hold_share(elapsed)
            return
        if was != UP:
            self._came_up(was)

    # ------------------------------------------------------------ up

    def _came_up(self, was: int) -> None:
        """The first exchange that worked: from now on the counts are real. Coming back from an
        outage, what the local share assumed the others used is given back (the exchange has
        applied what they really used)."""
        for j, i in enumerate(self.bucket_ids):
            if self._assumed[j]:
                self.store.refund_remote_usage(i, self._assumed[j])
                self._assumed[j] = 0
        self.state.set_state(UP)
        if was == DOWN:
            log.warning("cluster: Redis at %s is back; limits shared with %d live node(s) again",
                        mask_url(self.cluster.redis_url), self.state.nodes)
        else:
            log.info("cluster: node %s connected to Redis at %s (%s mode)", self.node,
                     mask_url(self.cluster.redis_url), self.cluster.mode)

    async def _settle(self) -> None:
        """Before this worker's first exchange: take back spend (``_settle_spend``) and, when the
        segment is fresh (approximate mode), lower the buckets to the level records
        (``_seed_levels``), before this node's first exchange overwrites its own."""
        pipe = self.client.pipeline(transaction=False)
        if self._fresh is None:          # (the first exchange makes the epoch: decided once)
            self._fresh = self.state.fresh
        seed = self.strict is None and self._fresh and self.bucket_ids
        if seed:
            for name in self.names:
                pipe.hgetall(self.redis_keys.level(name))
        levels = await self._settle_spend(pipe)
        if seed:
            self._seed_levels(levels)
            self._fresh = False
        self._settled = True

    async def _settle_spend(self, pipe) -> list:
        """Make each key's local spend this node's own plus the others', with the others' counted
        as applied. This node's own is the larger of its field in Redis (a restart kept it there)
        and what the segment holds beyond the others' (a reload or ``state_dir`` carried a total
        that includes them). Returns the replies queued in ``pipe`` before."""
        now = time.time()
        before = len(pipe)
        periods = []
        for key in self.keys:
            period = period_at(self.periods[key], now)[0]
            periods.append(period)
            pipe.hgetall(self.redis_keys.spend(key, self.periods[key], period))
        replies = await pipe.execute()
        for (key, k), period, fields in zip(self.keys.items(), periods, replies[before:]):
            others = sum(_int(v) for node, v in fields.items() if node != self.node)
            local = self.store.spent(k, period)
            own = max(_int(fields.get(self.node, 0)), local - others)
            if own + others != local:
                self.store.add_spend(k, period, own + others - local)
            self.state.set_spend_applied(key, period, others)
        return replies[:before]

    def _seed_levels(self, records: list[dict]) -> None:
        """A fresh segment's buckets start full (or at ``state_dir``'s levels): lower each to the
        lowest level a node's record shows now, less what this node used since it started (no
        record has that). Records refill by themselves (they say when the bucket is full), so an
        old one, a dead node's, or this node's own from before the restart are read alike."""
        now_ms = time.time() * 1000
        for j, (i, fields) in enumerate(zip(self.bucket_ids, records)):
            bucket = self.store.buckets[i]
            lowest = min((_level_at(bucket, _int(full_at), now_ms) for full_at in fields.values()), default=None)
            if lowest is None:
                continue
            # (what the local share assumed is given back when Redis is seen: not part of the level)
            over = round(bucket.available() + self._assumed[j] - (lowest - self.store.own_usage(i)))
            if over > 0:
                self.store.add_remote_usage(i, over)

    def _own_spend(self, key: str, k: int, period: int) -> int:
        return self.store.spent(k, period) - self.state.spend_applied(key, period)

    async def _exchange(self) -> None:
        rk, node = self.redis_keys, self.node
        epoch = str(self.state.epoch)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(rk.heartbeat(node), epoch, px=self.heartbeat_ms)
        pipe.sadd(rk.nodes, node)
        pipe.mget([rk.heartbeat(m) for m in self._members])
        pipe.smembers(rk.nodes)
        strict = self.strict is not None
        if not strict:
            now_ms = time.time() * 1000
            for name, i in zip(self.names, self.bucket_ids):
                usage, level = rk.usage(name), rk.level(name)
                pipe.hset(usage, node, f"{epoch}:{self.store.own_usage(i)}")
                pipe.expire(usage, _USAGE_TTL_S)
                pipe.hgetall(usage)
                pipe.hset(level, node, _full_at(self.store.buckets[i], now_ms))
                pipe.expire(level, _USAGE_TTL_S)
        now = time.time()
        spends = []
        for key, k in self.keys.items():
            kind = self.periods[key]
            period = period_at(kind, now)[0]
            spends.append((key, k, period))
            spend = rk.spend(key, kind, period)
            pipe.hset(spend, node, self._own_spend(key, k, period))
            if kind != "total":
                pipe.expire(spend, _SPEND_TTL_S)
            pipe.hgetall(spend)
        replies = await pipe.execute()
        alive = sum(1 for beat in replies[2] if beat is not None)
        self._members = sorted(replies[3] | {node})
        self.state.set_nodes(max(1, alive))
        at = 4
        if strict:
            seeds = [self.store.buckets[i].available() for i in self.bucket_ids]
            levels = await self.strict.levels(seeds) if self.bucket_ids else []
            for i, level in zip(self.bucket_ids, levels):
                self.store.buckets[i].set_available(level)
        else:
            for name, i in zip(self.names, self.bucket_ids):
                self._apply_usage(name, i, replies[at + 2])
                at += 5
        for key, k, period in spends:
            if self.periods[key] != "total":
                at += 1
            self._apply_spend(key, k, period, replies[at + 1])
            at += 2

    def _apply_usage(self, name: tuple, i: int, counters: dict) -> None:
        """Charge the local bucket what the other nodes consumed since they were last seen (net:
        negative gives tokens back), as remote use."""
        delta = 0
        for other, value in counters.items():
            if other == self.node:
                continue
            epoch, _, net = value.partition(":")
            net = _int(net)
            seen = self._seen.get((name, other))
            self._seen[(name, other)] = (epoch, net)
            if seen is None:
                continue           # first sight: what it consumed before now has refilled here too
            delta += net if seen[0] != epoch else net - seen[1]
        if delta > 0:
            self.store.add_remote_usage(i, delta)
        elif delta < 0:
            self.store.refund_remote_usage(i, -delta)

    def _apply_spend(self, key: str, k: int, period: int, spends: dict) -> None:
        others = sum(_int(v) for node, v in spends.items() if node != self.node)
        applied = self.state.spend_applied(key, period)
        if others != applied:
            self.store.add_spend(k, period, others - applied)
            self.state.set_spend_applied(key, period, others)

    # ------------------------------------------------------------ down

    def _went_down(self, error: BaseException) -> None:
        if self.state.state == DOWN:
            return
        self.state.set_state(DOWN)
        n = self.state.nodes
        policy = self.cluster.on_redis_down
        what = {"local_share": f"this host now enforces 1/{n} of each limit",
                "fail_open": "limits are off until it is back",
                "fail_closed": "limited requests are refused (503) until it is back"}[policy]
        log.error("cluster: Redis at %s is unreachable (%s); %s (on_redis_down = %s)",
                  mask_url(self.cluster.redis_url), type(error).__name__, what, policy)
        if policy == "local_share" and n > 1:
            for j, i in enumerate(self.bucket_ids):   # this host's share of what is left
                level = self.store.buckets[i].available()
                if level > 0:
                    self._assume(j, i, round(level - level / n))

    def _hold_share(self, elapsed: float) -> None:
        """Charge each bucket what the other N-1 nodes may refill and use meanwhile; no more than 1/N of its size."""
        n = self.state.nodes
        if n <= 1:
            return
        for j, i in enumerate(self.bucket_ids):
            bucket = self.store.buckets[i]
            others = bucket.rate_per_s * elapsed * (n - 1) / n
            over = bucket.available() - others - bucket.capacity / n
            self._assume(j, i, round(others + max(0.0, over)))

    def _assume(self, j: int, i: int, n: int) -> None:
        if n > 0:
            self.store.add_remote_usage(i, n)
            self._assumed[j] += n


def _full_at(bucket, now_ms: float) -> int:
    """The wall-clock ms at which ``bucket`` is full again: its level in a form that refills by
    itself (any node reads it at any later time), as GCRA's arrival time does."""
    return round(now_ms + (bucket.capacity - bucket.available()) / bucket.rate_per_s * 1000)


def _level_at(bucket, full_at_ms: int, now_ms: float) -> float:
    """The level a record written with ``_full_at`` shows at ``now_ms``, for ``bucket``'s size and rate."""
    return bucket.capacity - max(0.0, full_at_ms - now_ms) / 1000 * bucket.rate_per_s


def _int(value) -> int:
    """A counter read from Redis; 0 for anything that is not one (a foreign or damaged field)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
