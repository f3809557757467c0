"""Where limit state and spend are kept and shared: the seam between the limits and their storage.

Owns: ``LimitStore``, the only object the rest of ``limits`` asks to take from a
token bucket, correct a bucket, read a level, or add and read a key's spend, and
the bucket pairs it hands out (one limit's requests and tokens buckets, as the
request path draws on them: the segment's compiled ``BucketPair`` locally);
and ``LimitSnapshot``, the state by name (bucket levels, spend) that persistence
writes and restores. ``LocalStore`` keeps everything in the host's shared
segment: lock-free, exact across the host's worker processes, no I/O.

With ``[cluster]`` the store is ``cluster.store.ClusterStore`` (a ``LocalStore``
shared through Redis): in ``approximate`` mode its ``take`` is still the
segment's call and a background sync keeps the buckets at what the cluster
left; in ``strict`` mode ``synchronous`` is False and callers await
``take_async`` (one Redis script). The local path stays a plain call: no
coroutine per request.

``own_usage`` / ``add_remote_usage`` / ``refund_remote_usage`` are the seam
the cluster's sync uses: what other hosts used is charged to the bucket but
kept apart from this host's own use, which the sync publishes.

Must not touch: HTTP, configuration, policies (which bucket a request draws on
and what happens when it is short are ``quota``'s).
"""
from __future__ import annotations

from dataclasses import dataclass, field

BucketName = tuple[str, str, str]       # (scope "key" | "deployment", name, kind "requests" | "tokens")


@dataclass
class LimitSnapshot:
    """Limit state by name, for persistence and sync: levels are tokens now (negative: debt);
    spend is (period kind, period id, micro-USD) per key."""

    buckets: dict[BucketName, float] = field(default_factory=dict)
    spend: dict[str, tuple[str, int, int]] = field(default_factory=dict)


class LimitStore:
    """What the limits read and change; ``LocalStore`` is the host's segment."""

    synchronous = True

    def take(self, ids, amounts) -> tuple[bool, float]:
        """Take ``amounts[i]`` from bucket ``ids[i]``, all or none: (True, 0.0), or (False, seconds
        until they could all be taken; inf when one amount is more than its bucket holds)."""
        raise NotImplementedError

    async def take_async(self, ids, amounts) -> tuple[bool, float]:
        """``take`` for stores that must ask another process (strict cluster mode)."""
        return self.take(ids, amounts)

    def adjust(self, bucket: int, delta: int) -> None:
        """Correct a bucket after the fact: ``delta`` > 0 more was used (may go into debt), < 0 less."""
        raise NotImplementedError

    def level(self, bucket: int) -> float:
        """Tokens in the bucket now (negative: debt)."""
        raise NotImplementedError

    def bucket_pair(self, requests: int, tokens: int):
        """One limit's requests and tokens buckets (-1: absent) as one request draws on them, the
        form the request path calls: ``take(tokens)`` (one request and ``tokens``, all or none, as
        ``take``), ``take_async(tokens)`` when the store is not ``synchronous``, ``adjust(delta)``
        of the tokens bucket, ``has_requests`` / ``has_tokens``."""
        return StorePair(self, requests, tokens)

    def ledger(self, worker: int, estimate, add_spend):
        """Worker ``worker``'s grants over this store's pairs: the core's ``Ledger`` (see there)."""
        raise NotImplementedError

    def level_reader(self, bucket: int):
        """A function of no argument returning ``level(bucket)`` (the request path keeps one per bucket)."""
        return lambda: self.level(bucket)

    def levels_pair(self, requests: int, tokens: int):
        """The pair of buckets (-1: absent) whose levels a request's ``x-ratelimit-*`` headers show,
        for ``rate_headers``."""
        raise NotImplementedError

    def rate_headers(self, pairs) -> dict:
        """OpenAI's ``x-ratelimit-*`` headers over ``levels_pair``s (the segment's ``rate_headers``)."""
        raise NotImplementedError

    def capacity(self, bucket: int) -> int:
        raise NotImplementedError

    def rate_per_s(self, bucket: int) -> float:
        raise NotImplementedError

    def add_spend(self, key: int, period: int, micro_usd: int) -> int:
        """Add to a key's spend in ``period``; returns the period's total (micro-USD)."""
        raise NotImplementedError

    def add_remote_spend(self, key: int, period: int, micro_usd: int) -> int:
        """What other hosts spent, added to the key's spend in ``period`` (cluster sync)."""
        return self.add_spend(key, period, micro_usd)

    def own_usage(self, bucket: int) -> int:
        """This host's own use of a bucket since start, as a per-node counter (cluster sync)."""
        raise NotImplementedError

    def add_remote_usage(self, bucket: int, tokens: int) -> None:
        """Charge a bucket for what other hosts used, kept out of ``own_usage`` (cluster sync)."""
        raise NotImplementedError

    def refund_remote_usage(self, bucket: int, tokens: int) -> None:
        """Give back tokens charged by ``add_remote_usage`` (another host's use corrected down)."""
        raise NotImplementedError

    def spent(self, key: int, period: int) -> int:
        """micro-USD the key spent in ``period`` (0 when another period is current)."""
        raise NotImplementedError

    def spent_reader(self, key: int):
        """A function of ``period`` returning ``spent(key, period)`` (kept per key by the request path)."""
        return lambda period: self.spent(key, period)

    def export_spend(self, key: int) -> tuple[int, int]:
        """(period id, micro-USD) as stored."""
        raise NotImplementedError

    def restore_spend(self, key: int, period: int, micro_usd: int) -> None:
        raise NotImplementedError

    def set_level(self, bucket: int, tokens: float) -> None:
        raise NotImplementedError


class StorePair:
    """``LimitStore.bucket_pair`` through the store's ``take`` and ``adjust``, for a store whose
    calls do more than the segment's (the cluster's)."""

    __slots__ = ("store", "ids", "tokens_id", "has_requests", "has_tokens")

    def __init__(self, store: LimitStore, requests: int, tokens: int):
        self.store = store
        self.ids = [i for i in (requests, tokens) if i >= 0]
        self.tokens_id = tokens
        self.has_requests = requests >= 0
        self.has_tokens = tokens >= 0

    def _amounts(self, tokens: int) -> list[int]:
        amounts = [1] if self.has_requests else []
        if self.has_tokens:
            amounts.append(tokens)
        return amounts

    def take(self, tokens: int) -> tuple[bool, float]:
        return self.store.take(self.ids, self._amounts(tokens))

    async def take_async(self, tokens: int) -> tuple[bool, float]:
        return await self.store.take_async(self.ids, self._amounts(tokens))

    def adjust(self, delta: int) -> None:
        if self.has_tokens and delta:
            self.store.adjust(self.tokens_id, delta)


class LocalStore(LimitStore):
    """The host's shared segment: GCRA buckets and spend words, one CAS per call."""

    def __init__(self, segment, n_buckets: int, n_keys: int):
        self.segment = segment
        self.take = segment.take_all        # the compiled call itself: no hop on the request path
        self.rate_headers = segment.rate_headers
        self.buckets = [segment.bucket(i) for i in range(n_buckets)]
        self.spend = [segment.key_spend(k) for k in range(n_keys)]

    def bucket_pair(self, requests: int, tokens: int):
        return self.segment.bucket_pair(requests, tokens)     # the compiled pair: no Python per call

    def ledger(self, worker: int, estimate, add_spend):
        return self.segment.ledger(worker, estimate, add_spend)

    def levels_pair(self, requests: int, tokens: int):
        # the levels are the segment's whatever the store (the cluster's mirrors into it)
        return self.segment.bucket_pair(requests, tokens)

    def level_reader(self, bucket: int):
        return self.buckets[bucket].available

    def spent_reader(self, key: int):
        return self.spend[key].spent

    def adjust(self, bucket: int, delta: int) -> None:
        if delta > 0:
            self.buckets[bucket].charge(delta)
        elif delta < 0:
            self.buckets[bucket].refund(-delta)

    def level(self, bucket: int) -> float:
        return self.buckets[bucket].available()

    def own_usage(self, bucket: int) -> int:
        return self.buckets[bucket].consumed

    def add_remote_usage(self, bucket: int, tokens: int) -> None:
        self.buckets[bucket].charge_remote(tokens)

    def refund_remote_usage(self, bucket: int, tokens: int) -> None:
        self.buckets[bucket].refund_remote(tokens)

    def capacity(self, bucket: int) -> int:
        return self.buckets[bucket].capacity

    def rate_per_s(self, bucket: int) -> float:
        return self.buckets[bucket].rate_per_s

    def add_spend(self, key: int, period: int, micro_usd: int) -> int:
        return self.spend[key].add(period, micro_usd)

    def spent(self, key: int, period: int) -> int:
        return self.spend[key].spent(period)

    def export_spend(self, key: int) -> tuple[int, int]:
        return self.spend[key].export()

    def restore_spend(self, key: int, period: int, micro_usd: int) -> None:
        self.spend[key].restore(period, micro_usd)

    def set_level(self, bucket: int, tokens: float) -> None:
        self.buckets[bucket].set_available(tokens)
