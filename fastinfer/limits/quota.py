"""Keys' and deployments' limits on the request path: RPM/TPM buckets, key concurrency, budgets.

Owns: what a request draws on and gives back —

- per gateway key: its budget (spend in the current UTC period), its
  ``max_concurrency`` slots, its ``rpm`` and ``tpm`` buckets. Any of them short
  is a 429 (``rate_limit_exceeded`` / ``budget_exceeded``) at once;
- per deployment: its ``rate_limit`` buckets (the upstream's quota), short:
  ``on_capacity_exhausted`` — ``queue`` waits in the deployment's rate queue (the
  host-wide priority queue, one slot: its holder sleeps until the bucket's tokens
  are due, everyone else waits their turn in priority order, woken through their
  worker's eventfd), ``reject`` answers 429, ``fallback`` goes to the first
  usable fallback;
- the ``Grant`` a request holds from admission to its end: tokens are charged
  as an estimate (prompt + ``max_tokens``) and corrected to the upstream's usage
  when the request ends (a failed request gives back every token it did not
  use); spend is added; the key's slot is given back. Exactly once. The grant
  itself is the compiled core's (``_core.shm.Grant``, made by this worker's
  ``Ledger``; reference ``_core/ref/grants.py``): this module decides what is
  taken when, and words and raises what is refused.
- the ``x-ratelimit-*`` headers of every answer under a limit.

Storage is the ``LimitStore`` (``store``): the host's segment, or with ``[cluster]`` the cluster's.
Must not touch: HTTP objects (errors are raised, the gateway renders them),
routing, providers, configuration files.
"""
from __future__ import annotations

import asyncio
import math
import time

from ..errors import BudgetExceeded, RateLimited
from .._core.bodies import request_tokens
from .._core.shm import Grant
from .admission import AdmissionControl, CapacityExhausted
from .periods import PeriodClock, period_at
from .persist import StateFlusher
from .store import LimitStore, LocalStore

_MICRO = 1_000_000


#: a request's charge at admission: its prompt (``CHARS_PER_TOKEN`` characters a token) and, when
#: it sets one, ``max_tokens`` for every choice it asks for; one compiled call (the grant asks it)
estimated_tokens = request_tokens


class Bucket:
    """One limit's bucket as the admin API and the messages read it: its id in the store, its level
    and capacity."""

    __slots__ = ("id", "level", "capacity")

    def __init__(self, store: LimitStore, bucket: int):
        self.id = bucket
        self.level = store.level_reader(bucket)        # tokens now, negative in debt
        self.capacity = store.capacity(bucket)


def _buckets(store: LimitStore, buckets: dict, scope: str, name: str) -> tuple[Bucket | None, Bucket | None]:
    return tuple(Bucket(store, buckets[(scope, name, kind)]) if (scope, name, kind) in buckets else None
                 for kind in ("requests", "tokens"))


class _Draw:
    """The buckets one key or deployment draws on (for messages), and ``draw``, the core's
    ``LimitDraw`` of them a grant takes: the store's pair a request takes from and the pair its
    ``x-ratelimit-*`` headers read (``draw.pair`` None: no rate limit), and a key's slot."""

    __slots__ = ("requests", "tokens", "draw")

    def __init__(self, store: LimitStore, ledger, requests: Bucket | None, tokens: Bucket | None, slot=None,
                 gate=None):
        self.requests = requests
        self.tokens = tokens
        pair = levels = None
        if requests is not None or tokens is not None:
            ids = (requests.id if requests is not None else -1, tokens.id if tokens is not None else -1)
            pair = store.bucket_pair(*ids)
            levels = store.levels_pair(*ids)
        self.draw = ledger.draw(pair, levels, slot, gate)


class KeyLimits(_Draw):
    """One gateway key's limits, as this worker reaches them (``draw``: as a grant takes them)."""

    __slots__ = ("name", "index", "concurrency", "budget_micro", "budget_usd", "period_kind", "period", "config",
                 "spent", "series")

    def __init__(self, config, index: int, store: LimitStore, buckets: dict, concurrency, ledger, series=None):
        super().__init__(store, ledger, *_buckets(store, buckets, "key", config.name), slot=concurrency)
        self.config = config
        self.name = config.name
        self.series = series      # the key's metrics series: a settled request's tokens and cost are counted in it
        self.index = index
        self.spent = store.spent_reader(index)              # micro-USD spent in a period
        self.concurrency = concurrency                      # shm KeyConcurrency (limit 0: counted only)
        budget = config.budget
        self.budget_usd = budget.usd if budget is not None else None
        self.budget_micro = round(budget.usd * _MICRO) if budget is not None else None
        # spend is kept per budget period; a key without a budget keeps its total
        self.period_kind = budget.period if budget is not None else "total"
        self.period = PeriodClock(self.period_kind)


class DeploymentLimits(_Draw):
    """One deployment's ``rate_limit`` buckets and, under ``queue``, its rate queue."""

    __slots__ = ("name", "gate_index", "policy")

    def __init__(self, config, store: LimitStore, buckets: dict, gate_index: int | None, gate, ledger):
        super().__init__(store, ledger, *_buckets(store, buckets, "deployment", config.name), gate=gate)
        self.name = config.name
        self.gate_index = gate_index          # admission index of the rate queue (policy queue only); its
                                              # ``Admission`` is ``draw.gate``
        self.policy = config.on_capacity_exhausted


class Limits:
    """This worker's side of every key's and deployment's limits."""

    def __init__(self, config, store: LimitStore, *, worker: int, keys: dict, buckets: dict,
                 key_concurrency: list, admission: AdmissionControl | None = None, gates: dict | None = None,
                 metrics=None):
        """``keys``: key name -> index; ``buckets``: (scope, name, kind) -> bucket id;
        ``key_concurrency``: shm ``KeyConcurrency`` per key index; ``gates``: deployment name ->
        admission index of its rate queue."""
        self.store = store
        self.metrics = metrics
        self.admission = admission
        gates = gates or {}
        self.wall_time = time.time   # wall clock: budget periods are calendar periods
        # what a request takes and gives back is the core's (one call each); this side words the 429s
        self.ledger = store.ledger(worker, estimated_tokens, self._add_spend)
        self.keys = {k.name: KeyLimits(k, keys[k.name], store, buckets, key_concurrency[keys[k.name]], self.ledger,
                                       metrics.key_series(k.name) if metrics is not None else None)
                     for k in config.keys}
        self.deployments: list[DeploymentLimits | None] = []
        for d in config.deployments:
            gate_index = gates.get(d.name)
            gate = admission.admissions[gate_index] if gate_index is not None and admission else None
            limits = DeploymentLimits(d, store, buckets, gate_index, gate, self.ledger)
            self.deployments.append(limits if limits.draw.pair is not None else None)
        self.ledger.deployments = [d.draw if d is not None else None for d in self.deployments]
        # nothing to do per request when nothing is limited and no key is configured
        self.active = bool(self.keys) or any(self.deployments)
        self.flusher = None
        self.cluster = None          # cluster.ClusterSync with [cluster]
        # False: the store must ask Redis (strict mode), callers await ``admit_async``
        self.synchronous = store.synchronous

    @classmethod
    def for_worker(cls, config, host, worker: int, admission: AdmissionControl, metrics, *,
                   store: LimitStore | None = None, cluster=None) -> "Limits":
        """This worker's limits over the host's segment (``host``: ``process.hostwide.HostState``),
        saving the host's state under ``server.state_dir`` when this worker holds the lease.
        With ``[cluster]``: the cluster's ``store`` and its background ``cluster`` sync (started
        and stopped with the limits)."""
        segment, index = host.segment, host.index
        if store is None:
            store = LocalStore(segment, len(index.buckets), len(index.keys))
        limits = cls(config, store, worker=worker, keys=index.keys, buckets=index.buckets,
                     key_concurrency=[segment.key_concurrency(k) for k in range(len(index.keys))],
                     admission=admission, gates=index.rate_gates, metrics=metrics)
        limits.cluster = cluster
        if host.state_dir is not None:
            limits.flusher = StateFlusher(host.state_dir, segment, store, index.buckets, index.keys, config, worker)
        return limits

    def start(self, loop) -> None:
        if self.flusher is not None:
            self.flusher.start(loop)
        if self.cluster is not None:
            self.cluster.start(loop)

    async def stop(self) -> None:
        if self.flusher is not None:
            await self.flusher.stop()
        if self.cluster is not None:
            await self.cluster.stop()

    # ------------------------------------------------------------ admission

    def admit(self, req) -> Grant:
        """The request's grant; with a key, its limits are taken now or a 429 is raised."""
        key = self.keys.get(req.key)          # None without a key (or with one the limits do not know)
        if key is not None and key.budget_micro is not None:
            self._check_budget(key, req)
        grant = self.ledger.admit(key, req)   # the slot and the key's pair, in one call
        if grant.refusal is not None:
            self._key_refused(grant, key, req)
        return grant

    async def admit_async(self, req) -> Grant:
        """``admit`` over a store that asks Redis (``synchronous`` False)."""
        key = self.keys.get(req.key)
        grant = self.ledger.grant(key, req)
        if key is not None:
            if key.budget_micro is not None:
                self._check_budget(key, req)
            if not grant.acquire_slot():
                self._concurrency_refused(key, req, grant)
            if key.draw.pair is not None:
                try:
                    ok, wait = await key.draw.pair.take_async(grant.key_amount())
                except BaseException:
                    grant.release()
                    raise
                if not ok:
                    grant.release()
                    self._rate_refused(key, req, grant, wait)
                grant.key_taken()
        return grant

    # the key's checks, in ``admit``: its budget (a key with one), then its concurrency slot and its
    # buckets, taken by the ledger; these raise the 429s

    def _check_budget(self, key: KeyLimits, req) -> None:
        """The key's budget for this period is not spent, or a 429."""
        if key.spent(key.period.current(self.wall_time())) >= key.budget_micro:
            self._reject(req, "budget_exceeded")
            total = key.period_kind == "total"
            raise BudgetExceeded(
                f"Key {key.name} has spent its budget of ${key.budget_usd:g} for this "
                + ("key (a total budget: it does not reset)." if total else
                   f"{key.period_kind}; it resets at the start of the next one (UTC)."),
                retry_after=math.inf if total else key.period.ends_at - self.wall_time(),
                headers=self.ledger.grant(key, req).rate_headers())

    def _key_refused(self, grant: Grant, key: KeyLimits, req):
        """What ``Ledger.admit`` found short, as its 429 (the slot is already given back)."""
        if grant.refusal == "key_concurrency":
            self._concurrency_refused(key, req, grant)
        self._rate_refused(key, req, grant, grant.wait)

    def _concurrency_refused(self, key: KeyLimits, req, grant: Grant):
        """The key has ``max_concurrency`` requests in flight: a 429."""
        self._reject(req, "key_concurrency")
        raise RateLimited(f"Key {key.name} already has {key.concurrency.limit} requests in flight "
                          "(its max_concurrency); retry when one has finished.",
                          retry_after=1.0, headers=grant.rate_headers())

    def _rate_refused(self, key: KeyLimits, req, grant: Grant, wait: float):
        """The key's buckets could not give what the request needs (its slot is back): a 429."""
        self._reject(req, "key_rate_limited")
        if wait == math.inf:
            raise RateLimited(self._unmeetable(f"key {key.name}", key.tokens, grant.tokens),
                              retry_after=math.inf, headers=grant.rate_headers())
        raise RateLimited(f"Key {key.name} is over its rate limit ({self._limits_text(key.config)}); "
                          f"retry in {max(1, math.ceil(wait))}s.", retry_after=wait, headers=grant.rate_headers())

    def _add_spend(self, key: KeyLimits, cost_usd: float) -> None:
        """A settled request's cost, into its key's spend for the current period."""
        self.store.add_spend(key.index, key.period.current(self.wall_time()), round(cost_usd * _MICRO))

    def take_deployment(self, grant: Grant, index: int, req, timeout_s: float):
        """Take from deployment ``index``'s rate buckets, or raise per its ``on_capacity_exhausted``.

        Returns None when taken (or the deployment has no rate limit), or, under ``queue`` when
        the bucket is short or others wait, a coroutine to await: it waits in the deployment's
        rate queue up to ``timeout_s`` (then 503). The fast path skips the queue only when nobody
        waits in it, so waiters keep their order. The common case is the grant's one call
        (``grant.take_deployment``): the engine makes it first and calls this when it says False.
        """
        dep = self.deployments[index]
        if dep is None:
            return None
        if not self.synchronous:
            return self._take_deployment_async(grant, dep, req, timeout_s)
        gate = dep.draw.gate
        if gate is None or gate.counts() == _IDLE:
            wait = grant.take(dep.draw)
            if wait is None:
                return None
            if wait == math.inf or gate is None:
                self._deployment_short(grant, dep, req, wait)
        return self._wait_in_rate_queue(grant, dep, req.priority, timeout_s)

    async def _take_deployment_async(self, grant: Grant, dep: DeploymentLimits, req, timeout_s: float) -> None:
        """``take_deployment`` over a store that asks Redis."""
        gate = dep.draw.gate
        if gate is None or gate.counts() == _IDLE:
            ok, wait = await dep.draw.pair.take_async(grant.amount(dep.draw))
            if ok:
                grant.charged(dep.draw)
                return
            if wait == math.inf or gate is None:
                self._deployment_short(grant, dep, req, wait)
        await self._wait_in_rate_queue(grant, dep, req.priority, timeout_s)

    def _deployment_short(self, grant: Grant, dep: DeploymentLimits, req, wait: float):
        """The deployment's bucket is short and the request will not wait: 429, or a fallback."""
        grant.refused(dep.draw)
        self._reject(req, "rate_limited", dep.name)
        if wait == math.inf:
            raise _deployment_limited(self._unmeetable(f"deployment {dep.name}", dep.tokens, grant.tokens),
                                      math.inf, fallback=True, headers=grant.rate_headers())
        raise _deployment_limited(f"Deployment {dep.name} is over its upstream's rate limit; "
                                  f"retry in {max(1, math.ceil(wait))}s.", wait,
                                  fallback=dep.policy == "fallback", headers=grant.rate_headers())

    async def _wait_in_rate_queue(self, grant: Grant, dep: DeploymentLimits, priority: int,
                                  timeout_s: float) -> None:
        """Hold the rate queue's one slot (waiting for it in priority order), then sleep until the
        bucket's tokens are due and take them; give the slot to the next waiter either way."""
        tokens = grant.amount(dep.draw)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await self.admission.acquire(dep.gate_index, priority, "queue", timeout_s)
        except CapacityExhausted as e:
            grant.refused(dep.draw)
            e.headers.update(grant.rate_headers())
            raise
        try:
            while True:
                pair = dep.draw.pair
                ok, wait = pair.take(tokens) if self.synchronous else await pair.take_async(tokens)
                if ok:
                    grant.charged(dep.draw)
                    return
                left = deadline - loop.time()
                if wait == math.inf or wait > left:
                    # a charge corrected upwards can push the wait past the timeout: say so now
                    grant.refused(dep.draw)
                    if wait == math.inf:
                        raise _deployment_limited(self._unmeetable(f"deployment {dep.name}", dep.tokens,
                                                                   grant.tokens),
                                                  math.inf, fallback=True, headers=grant.rate_headers())
                    error = CapacityExhausted(f"Waited {timeout_s:g}s in the queue for the rate limit of "
                                              f"deployment {dep.name}; it admits this request in {wait:.1f}s.",
                                              "queue_timeout")
                    error.retry_after = wait
                    error.headers.update(grant.rate_headers())
                    raise error
                await asyncio.sleep(wait)
        finally:
            self.admission.release(dep.gate_index)

    def _reject(self, req, reason: str, deployment: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.rejected(deployment or req.model, reason)

    @staticmethod
    def _unmeetable(what: str, bucket: Bucket | None, tokens: int) -> str:
        if bucket is None:
            return f"This request can never fit the limits of {what}."
        return (f"This request needs {tokens} tokens (its prompt and max_tokens) but {what} holds at most "
                f"{bucket.capacity} (its tokens-per-minute limit): it can never be admitted. "
                "Lower max_tokens or shorten the prompt.")

    @staticmethod
    def _limits_text(config) -> str:
        parts = [f"{v} {unit}" for v, unit in ((config.rpm, "requests"), (config.tpm, "tokens")) if v]
        return " and ".join(parts) + " per minute"

    # ------------------------------------------------------------ reading

    def period_of(self, key: KeyLimits) -> int:
        return key.period.current(self.wall_time())

    @staticmethod
    def remaining(bucket: Bucket) -> int:
        """Whole tokens left (0 in debt)."""
        return max(0, math.floor(bucket.level()))


_IDLE = (0, 0)       # a rate queue nobody holds or waits in


def _deployment_limited(message: str, retry_after: float, *, fallback: bool, headers: dict) -> RateLimited:
    error = RateLimited(message, retry_after=retry_after, headers=headers)
    error.fallback = fallback
    return error


def budget_state(limits: Limits, key: KeyLimits) -> dict | None:
    """A key's budget as the admin API shows it, or None without one."""
    if key.budget_micro is None:
        return None
    period = limits.period_of(key)
    spent = limits.store.spent(key.index, period) / _MICRO
    _, ends = period_at(key.period_kind, limits.wall_time())
    return {"usd": key.budget_usd, "period": key.period_kind, "spent_usd": spent,
            "remaining_usd": max(0.0, key.budget_usd - spent),
            "resets_at": None if ends == math.inf else ends}
