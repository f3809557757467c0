"""Pure-Python reference of ``fastinfer._core.shm``'s ``Ledger``, ``LimitDraw`` and ``Grant``: what one
request takes from the limits (a key's concurrency slot, a key's and each deployment's bucket pair)
and gives back or corrects when it ends, exactly once. Same API and results as the compiled ones,
so the tests can compare them call for call.

Must not touch: configuration, HTTP, messages and errors (``limits.quota`` words and raises them;
these only say what happened). Pairs and slots are any objects with the segment's ``BucketPair``
and ``KeyConcurrency`` API; the headers read this module's segment's pairs.
"""
from __future__ import annotations

from .limits import BucketPair, rate_fields, rate_headers


class LimitDraw:
    """One key's or deployment's limits as a request draws on them: ``pair`` (taken and corrected:
    the segment's ``BucketPair``, or a store's pair with its API), ``levels`` (the segment's pair
    the ``x-ratelimit-*`` headers read) and, for a key, its concurrency ``slot``; for a deployment
    whose requests wait for its rate limit, its rate queue's ``gate`` (an ``Admission``: taken from
    only while nobody holds or waits in it). A key without a rate limit has neither pair (None)."""

    __slots__ = ("pair", "levels", "slot", "gate", "has_tokens")

    def __init__(self, pair, levels, slot=None, gate=None):
        if (pair is None) != (levels is None):
            raise ValueError("a draw has both its pair and its levels, or neither")
        self.pair = pair
        self.levels = levels
        self.slot = slot
        self.gate = gate
        self.has_tokens = pair is not None and bool(pair.has_tokens)


class Ledger:
    """This worker's side of the grants: each deployment's draw by index (``deployments``; None
    where a deployment has no rate limit), the worker's index (whose slots a key's concurrency
    counts), ``estimate(body)`` (a request's tokens at admission), and ``add_spend(key, cost_usd)``,
    what a key's cost is handed to when a request that cost something ends (its tokens and cost are
    counted into the key's ``series``)."""

    def __init__(self, worker: int, estimate, add_spend):
        self.worker = worker
        self.estimate = estimate
        self.add_spend = add_spend
        self.deployments: list[LimitDraw | None] = []

    def draw(self, pair, levels, slot=None, gate=None):
        """A key's or deployment's ``LimitDraw`` (see there)."""
        return LimitDraw(pair, levels, slot, gate)

    def grant(self, key, req) -> "Grant":
        """A new request's grant (nothing taken yet). ``key``: its key's limits (an object with a
        ``draw``, a ``name`` and a ``series``: its ``RequestSeries``, or None: its usage is not counted)
        or None; ``req``: its request (``body`` read for the estimate,
        ``usage`` and ``cost_usd`` when it is settled)."""
        return Grant(self, key, req)

    def admit(self, key, req) -> "Grant":
        """A new request's grant with its key's limits taken (``grant`` and then its key's
        ``acquire_slot`` and ``take_key``, in one call): ``refusal`` says what was short, None when
        nothing was (or there is no key): ``"key_concurrency"`` (no slot), ``"key_rate_limited"``
        (the pair; ``wait``: the seconds until it fits, inf: never; the slot is given back). A store
        that raises gives the slot back before the error goes on."""
        grant = self.grant(key, req)
        if key is None:
            return grant
        if not grant.acquire_slot():
            grant.refusal = "key_concurrency"
            return grant
        try:
            wait = grant.take_key()
        except BaseException:
            grant.release()
            raise
        if wait is not None:
            grant.release()
            grant.refusal = "key_rate_limited"
            grant.wait = wait
        return grant


class Grant:
    """What one request took from the limits, given back or corrected exactly once (``settle``)."""

    __slots__ = ("ledger", "key", "req", "_key", "key_slot", "_key_tokens", "_seen", "_tokens", "settled",
                 "refusal", "wait")

    def __init__(self, ledger: Ledger, key, req):
        self.ledger = ledger
        self.key = key
        self.req = req
        self._key = key.draw if key is not None else None
        self.key_slot = False          # holds one of the key's concurrency slots
        self._key_tokens = -1          # the estimate charged to the key's tokens bucket (-1: none)
        self._seen: list[tuple[LimitDraw, int]] = []   # (deployment, tokens charged; -1 refused)
        self._tokens = -1
        self.settled = False
        self.refusal = None            # what ``Ledger.admit`` found short (None: nothing)
        self.wait = 0.0                # for the key's pair: the seconds until it fits

    @property
    def tokens(self) -> int:
        """The request's estimated tokens (computed once, only when a tokens bucket needs it)."""
        if self._tokens < 0:
            self._tokens = int(self.ledger.estimate(self.req.body))
        return self._tokens

    @property
    def key_tokens(self) -> int | None:
        return self._key_tokens if self._key_tokens >= 0 else None

    @property
    def seen(self) -> list[tuple[LimitDraw, int]]:
        """Each deployment whose limits applied, in order, and the tokens charged to it (-1: refused)."""
        return list(self._seen)

    def acquire_slot(self) -> bool:
        """One of the key's concurrency slots (every keyed request holds one; a key without
        ``max_concurrency`` only counts them); False when the key is at its limit."""
        if self._keyed().slot.try_acquire(self.ledger.worker):
            self.key_slot = True
            return True
        return False

    def key_amount(self) -> int:
        """What the key's pair is asked for besides the request: its estimate, or 0 without a tokens bucket."""
        return self.tokens if self._keyed().has_tokens else 0

    def take_key(self):
        """Take the request and its tokens from the key's pair: None when taken (or the key has no
        rate limit), else the seconds until they fit (inf: never). All or none."""
        draw = self._keyed()
        if draw.pair is None:
            return None
        ok, wait = draw.pair.take(self.key_amount())
        if not ok:
            return wait
        self.key_taken()
        return None

    def key_taken(self) -> None:
        """The key's pair was taken by the caller (a store that must be awaited)."""
        if self._keyed().has_tokens:
            self._key_tokens = self._tokens

    def _keyed(self) -> LimitDraw:
        if self._key is None:
            raise ValueError("this grant has no key")
        return self._key

    def amount(self, dep: LimitDraw) -> int:
        """What ``dep``'s pair is asked for besides the request."""
        return self.tokens if dep.has_tokens else 0

    def take(self, dep: LimitDraw):
        """Take the request and its tokens from deployment ``dep``'s pair: None when taken (and
        recorded), else the seconds until they fit (nothing recorded)."""
        ok, wait = dep.pair.take(self.amount(dep))
        if not ok:
            return wait
        self.charged(dep)
        return None

    def take_deployment(self, index: int) -> bool:
        """The common case of a deployment's rate limit, in one call: True when deployment ``index``
        has none (its ``ledger.deployments`` entry is None) or its pair (the segment's, with its
        rate queue idle if it has one: ``gate.counts()`` is (0, 0)) gave the request and its tokens
        (recorded). False when the caller must decide: a store's pair, a queue someone holds or
        waits in, or a short pair (nothing taken: the caller's ``take`` sees the same)."""
        if not 0 <= index < len(self.ledger.deployments):
            raise IndexError("deployment index out of range")
        dep = self.ledger.deployments[index]
        if dep is None:
            return True
        if type(dep.pair) is not BucketPair or (dep.gate is not None and dep.gate.counts() != (0, 0)):
            return False
        return self.take(dep) is None

    def charged(self, dep: LimitDraw) -> None:
        self._seen.append((dep, self._tokens if dep.has_tokens else 0))

    def refused(self, dep: LimitDraw) -> None:
        self._seen.append((dep, -1))

    def release(self) -> None:
        """Give back the key's concurrency slot (once)."""
        if self.key_slot:
            self.key_slot = False
            self._key.slot.release(self.ledger.worker)

    def settle(self, served: int | None = None) -> None:
        """The request has ended: correct every tokens bucket to the usage of the deployment that
        served it (``served``, its index; None: nothing was served, every token goes back), hand
        the key's usage on, give back the key's slot. Once; reads ``req.usage`` and ``req.cost_usd``."""
        if self.settled:
            return
        self.settled = True
        ledger = self.ledger
        usage = self.req.usage if served is not None else None
        prompt = completion = used = 0
        if usage:
            prompt = usage.get("prompt_tokens", 0)
            completion = usage.get("completion_tokens", 0)
            used = prompt + completion
        served_by = ledger.deployments[served] if served is not None else None
        for dep, charged in self._seen:
            if charged >= 0 and dep.has_tokens:
                dep.pair.adjust((used if dep is served_by else 0) - charged)
        if self.key is None:
            return
        if self._key_tokens >= 0:
            self._key.pair.adjust(used - self._key_tokens)
        if usage:
            cost = self.req.cost_usd
            if cost:
                ledger.add_spend(self.key, cost)
            if self.key.series is not None:
                self.key.series.usage(prompt, completion, usage.get("cached_tokens", 0), cost)
        self.release()

    def settle_answered(self, served: int) -> bytes:
        """``settle(served)`` and then ``rate_fields()``, in one call: a whole answer's end."""
        self.settle(served)
        return self.rate_fields()

    def rate_headers(self) -> dict:
        """OpenAI's ``x-ratelimit-*`` headers: per kind, from the limit with the least left (the
        key's, then each deployment's that applied)."""
        return rate_headers(self._levels())

    def rate_fields(self) -> bytes:
        """``rate_headers`` encoded for an answer's head (``name: value`` CR LF each, in order)."""
        return rate_fields(self._levels())

    def _levels(self) -> list:
        pairs = [self._key.levels] if self._key is not None and self._key.levels is not None else []
        pairs.extend(dep.levels for dep, _ in self._seen)
        return pairs
