"""Strict mode: every admission under a limit is one atomic Lua script in Redis, exact across hosts.

Owns: the scripts and their calling. A limit's bucket in Redis is the same
GCRA as the segment's (one number, the theoretical arrival time, in µs of the
Redis server's clock, so hosts need no common clock): ``TAKE`` takes every
amount all or none, ``ADJUST`` corrects one bucket (a refund never above
capacity, a charge may go into debt), ``LEVELS`` reads every level and seeds a
missing bucket from this host's last known level (Redis restarted empty).
Scripts run as EVALSHA; redis-py's ``Script`` loads them again on NOSCRIPT.

Must not touch: the segment (``store`` and ``sync`` apply what these return).
"""
from __future__ import annotations

import math

# KEYS: buckets; ARGV: per bucket (amount, interval µs per token, capacity in tokens)
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local wait = 0
for i = 1, n do
  local amount = tonumber(ARGV[3 * i - 2])
  local interval = tonumber(ARGV[3 * i - 1])
  local capacity = tonumber(ARGV[3 * i])
  if amount > capacity then return {0, -1} end
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + amount * interval
  local late = new - now - capacity * interval
  if late > wait then wait = late end
  tats[i] = new
end
if wait > 0 then return {0, math.ceil(wait)} end
for i = 1, n do
  local ttl = math.ceil((tats[i] - now) / 1000) + 1000
  redis.call('SET', KEYS[i], tats[i], 'PX', ttl)
end
return {1, 0}
"""

# KEYS[1]: bucket; ARGV: delta tokens (> 0 charge, < 0 refund), interval µs per token
ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
if tat < now then tat = now end
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1000)
return 1
"""

# KEYS: buckets; ARGV: per bucket (interval µs per token, capacity, this host's level to seed a missing one)
# returns each bucket's level in milli-tokens (negative: debt)
LEVELS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local capacity = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil then
    tat = now + (capacity - tonumber(ARGV[3 * i])) * interval
    if tat > now then redis.call('SET', KEYS[i], tat, 'PX', math.ceil((tat - now) / 1000) + 1000) end
  end
  if tat < now then tat = now end
  out[i] = math.floor((capacity - (tat - now) / interval) * 1000)
end
return out
"""


class StrictBuckets:
    """The Redis side of the limits in strict mode, for one worker's client."""

    def __init__(self, client, keys, names: list, buckets: list):
        """``names[i]``: bucket i's name; ``buckets[i]``: its segment ``TokenBucket`` (for its rate and size)."""
        self.client = client
        self.redis_keys = [keys.bucket(name) for name in names]
        self.interval_us = [1e6 / b.rate_per_s for b in buckets]
        self.capacity = [b.capacity for b in buckets]
        self._take = client.register_script(TAKE)
        self._adjust = client.register_script(ADJUST)
        self._levels = client.register_script(LEVELS)

    async def take(self, ids, amounts) -> tuple[bool, float]:
        args = []
        for i, n in zip(ids, amounts):
            args += (n, self.interval_us[i], self.capacity[i])
        ok, wait_us = await self._take(keys=[self.redis_keys[i] for i in ids], args=args)
        if ok:
            return True, 0.0
        return False, math.inf if wait_us < 0 else wait_us / 1e6

    async def adjust(self, bucket: int, delta: int) -> None:
        await self._adjust(keys=[self.redis_keys[bucket]], args=[delta, self.interval_us[bucket]])

    async def levels(self, seeds: list[float]) -> list[float]:
        """Every bucket's level in Redis; a bucket Redis lost starts from ``seeds[i]``."""
        args = []
        for i, seed in enumerate(seeds):
            args += (self.interval_us[i], self.capacity[i], seed)
        return [milli / 1000 for milli in await self._levels(keys=self.redis_keys, args=args)]
