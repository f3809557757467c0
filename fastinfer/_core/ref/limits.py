"""Pure-Python reference of the limit structures of ``fastinfer._core.shm``:
token buckets (GCRA), a request's pair of them and its ``x-ratelimit-*`` headers, gateway keys'
concurrency and spend. Same API and the same integer arithmetic as the compiled
ones, so the tests can compare them result for result.

Must not touch: configuration, HTTP. Guarded by the segment's one lock.
"""
from __future__ import annotations

import math

from ..constants import MAX_PERIOD, MAX_SPAN_NS, MAX_SPEND


def _cost(interval_ns: float, n: float) -> int:
    """ns of refill that ``n`` tokens are worth, clamped as the compiled core does."""
    c = n * interval_ns + 0.5
    if not c > 0.0:
        return 0
    if c >= float(MAX_SPAN_NS):
        return MAX_SPAN_NS
    return int(c)


def _amount(n) -> int:
    n = int(n)
    if n < 0:
        raise ValueError("token amounts must be >= 0")
    if n >= 1 << 63:
        raise OverflowError("token amount out of int64 range")
    return n


class TokenBucket:
    def __init__(self, st, per_minute: float, burst: int):
        self._st = st
        self.per_minute = per_minute
        self.capacity = burst
        self._interval = 60e9 / per_minute
        self._tau = _cost(self._interval, float(burst))
        self._tat = 0
        self._consumed = 0
        self._remote = 0

    @property
    def rate_per_s(self):
        return self.per_minute / 60.0

    @property
    def consumed(self):
        return self._consumed

    @property
    def remote(self):
        return self._remote

    def _take(self, n: int, now: int) -> bool:
        new = max(self._tat, now) + _cost(self._interval, float(n))
        if new - now > self._tau:
            return False
        self._tat = new
        self._consumed += n
        return True

    def _refill(self, n: int, now: int) -> None:
        self._tat = max(self._tat - _cost(self._interval, float(n)), now)

    def _refund(self, n: int, now: int) -> None:
        self._refill(n, now)
        self._consumed -= n

    def _wait_s(self, n: int, now: int) -> float:
        c = _cost(self._interval, float(n))
        if c > self._tau:
            return math.inf
        late = max(self._tat, now) + c - now - self._tau
        return late / 1e9 if late > 0 else 0.0

    def take(self, n=1):
        n = _amount(n)
        with self._st.lock:
            return self._take(n, self._st.now_ns())

    def refund(self, n):
        n = _amount(n)
        with self._st.lock:
            self._refund(n, self._st.now_ns())

    def _charge(self, n: int) -> None:
        now = self._st.now_ns()
        self._tat = min(max(self._tat, now) + _cost(self._interval, float(n)), now + self._tau + MAX_SPAN_NS)

    def charge(self, n):
        n = _amount(n)
        with self._st.lock:
            self._charge(n)
            self._consumed += n

    def charge_remote(self, n):
        n = _amount(n)
        with self._st.lock:
            self._charge(n)
            self._remote += n

    def refund_remote(self, n):
        """``refund`` of tokens charged with ``charge_remote``: ``remote`` never goes below 0."""
        n = _amount(n)
        with self._st.lock:
            self._refill(n, self._st.now_ns())
            self._remote = max(self._remote - n, 0)

    def available(self):
        with self._st.lock:
            now = self._st.now_ns()
            return (self._tau - (max(self._tat, now) - now)) / self._interval

    def wait_s(self, n=1):
        n = _amount(n)
        with self._st.lock:
            return self._wait_s(n, self._st.now_ns())

    def set_available(self, tokens):
        tokens = float(tokens)
        if math.isnan(tokens):
            raise ValueError("tokens must be a number")
        tokens = min(tokens, float(self.capacity))
        behind = _cost(self._interval, self.capacity - tokens)
        with self._st.lock:
            self._tat = self._st.now_ns() + min(behind, self._tau + MAX_SPAN_NS)


def take_all(st, buckets: list, ids, amounts):
    """Segment.take_all: all or none."""
    ids, amounts = list(ids), list(amounts)
    if len(ids) != len(amounts):
        raise ValueError("take_all: one amount per bucket id")
    for i, n in zip(ids, amounts):
        if not 0 <= i < len(buckets):
            raise IndexError("token bucket index out of range")
        _amount(n)
    with st.lock:
        now = st.now_ns()
        for k, (i, n) in enumerate(zip(ids, amounts)):
            if not buckets[i]._take(int(n), now):
                for j in range(k - 1, -1, -1):
                    buckets[ids[j]]._refund(int(amounts[j]), now)
                need: dict[int, int] = {}           # a bucket named twice needs both amounts
                for j, a in zip(ids, amounts):
                    need[j] = need.get(j, 0) + int(a)
                return False, max([0.0] + [buckets[j]._wait_s(n, now) for j, n in need.items()])
        return True, 0.0


class BucketPair:
    """Segment.bucket_pair: one request and its tokens, all or none; the tokens corrected."""

    def __init__(self, st, requests: TokenBucket | None, tokens: TokenBucket | None):
        self._st = st
        self._requests = requests
        self._tokens = tokens
        self.has_requests = requests is not None
        self.has_tokens = tokens is not None

    def take(self, tokens):
        tokens = _amount(tokens)
        req, tok = self._requests, self._tokens
        with self._st.lock:
            now = self._st.now_ns()
            if req is not None and not req._take(1, now):
                pass
            elif tok is not None and not tok._take(tokens, now):
                if req is not None:
                    req._refund(1, now)
            else:
                return True, 0.0
            return False, max([0.0] + [b._wait_s(n, now) for b, n in ((req, 1), (tok, tokens)) if b is not None])

    def adjust(self, delta):
        delta = int(delta)
        if self._tokens is None or delta == 0:
            return
        if delta > 0:
            self._tokens.charge(delta)
        else:
            self._tokens.refund(-delta)


#: OpenAI's x-ratelimit-* names per kind: the limit, what is left, when it is full again
REQUEST_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def rate_headers(pairs) -> dict:
    """OpenAI's ``x-ratelimit-*`` headers of a request that drew on ``pairs`` (``BucketPair``s, the
    key's first, then each deployment's): per kind, from the bucket with the least left now (the
    first of equals); none for a kind no pair has."""
    least = {}
    for pair in pairs:
        if not isinstance(pair, BucketPair):
            raise TypeError(f"expected a BucketPair, got {type(pair).__name__}")
        for kind, bucket in ((REQUEST_HEADERS, pair._requests), (TOKEN_HEADERS, pair._tokens)):
            if bucket is not None:
                left = bucket.available()
                if kind not in least or left < least[kind][1]:
                    least[kind] = (bucket, left)
    headers = {}
    for names in (REQUEST_HEADERS, TOKEN_HEADERS):
        if names in least:
            bucket, left = least[names]
            limit, remaining, reset = names
            headers[limit] = str(bucket.capacity)
            if left >= bucket.capacity:       # full, as a limit that does not bind mostly is
                headers[remaining] = str(bucket.capacity)
                headers[reset] = "0s"
            else:
                headers[remaining] = str(int(left)) if left > 0 else "0"
                headers[reset] = reset_duration((bucket.capacity - left) * (1.0 / (bucket.per_minute / 60.0)))
    return headers


def rate_fields(pairs) -> bytes:
    """``rate_headers`` encoded as an answer head's fields: ``name: value`` CR LF each, in order."""
    return "".join(f"{name}: {value}\r\n" for name, value in rate_headers(pairs).items()).encode()


def reset_duration(seconds: float) -> str:
    """A wait as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if not seconds > 0:
        return "0s"
    ms = math.ceil(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    total = (ms + 999) // 1000
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


class KeyConcurrency:
    def __init__(self, st, limit: int):
        self._st = st
        self.limit = limit
        self.in_flight = 0
        self._held: dict[int, int] = {}

    def try_acquire(self, worker):
        self._st.check_worker(worker)
        with self._st.lock:
            if self.limit and self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            self._held[worker] = self._held.get(worker, 0) + 1
            return True

    def release(self, worker):
        self._st.check_worker(worker)
        with self._st.lock:
            if self._held.get(worker, 0) <= 0:
                raise RuntimeError(f"worker {worker} holds no slot of this key")
            self._held[worker] -= 1
            self.in_flight -= 1

    def held_by(self, worker):
        self._st.check_worker(worker)
        return self._held.get(worker, 0)

    def reserve(self, n):
        with self._st.lock:
            self.in_flight += n
            return n

    def unreserve(self, n):
        with self._st.lock:
            self.in_flight -= n

    def _reclaim(self, worker) -> int:
        n = self._held.pop(worker, 0)
        self.in_flight -= n
        return n


def _check_period(period) -> int:
    period = int(period)
    if not 0 <= period <= MAX_PERIOD:
        raise ValueError(f"budget period must be in 0..{MAX_PERIOD}")
    return period


class KeySpend:
    def __init__(self, st):
        self._st = st
        self._period = 0
        self._micro = 0

    def add(self, period, micro_usd):
        period = _check_period(period)
        micro_usd = int(micro_usd)
        with self._st.lock:
            if period > self._period:
                self._period, self._micro = period, 0
            self._micro = min(max(self._micro + micro_usd, 0), MAX_SPEND)
            return self._micro

    def spent(self, period):
        period = _check_period(period)
        return self._micro if period == self._period else 0

    def export(self):
        return (self._period, self._micro)

    def restore(self, period, micro_usd):
        period = _check_period(period)
        if not 0 <= micro_usd <= MAX_SPEND:
            raise ValueError(f"micro_usd must be in 0..{MAX_SPEND}")
        with self._st.lock:
            self._period, self._micro = period, int(micro_usd)
