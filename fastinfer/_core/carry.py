"""Carrying host state from one segment into the next (config reload).

Owns: copying, by index mapping, what must survive a reload from the old
generation's segment into the new one -- counters, histograms, token bucket
levels and use counters (``consumed``, this host's own, apart from ``remote``,
other hosts' charged by a cluster sync), key spend, circuit states and open times, replica health, session
bindings and prefix entries -- and, when the old generation has drained, what
it counted, spent and consumed in the meantime (a second call with the
snapshot the first one returned).

Counters and histograms go with the rest when ``StateMap`` maps them, or alone
(``carry_counts``). Works on the compiled segment and on the reference alike (it uses their public
API only). Must not touch: names and configuration; the caller
(``process.hostwide``) maps names to indices and hands in a ``StateMap``.
Not carried: what is in flight (admission slots, key and replica in-flight
counts, probes, leases): the old generation's requests finish in, and give
back to, the old segment.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StateMap", "Carried", "Counted", "carry_state", "carry_counts"]


@dataclass
class StateMap:
    """old index -> new index, for what both segments have (a removed thing has no entry)."""

    deployments: dict[int, int] = field(default_factory=dict)
    replicas: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)   # (dep, replica)
    buckets: dict[int, int] = field(default_factory=dict)
    keys: dict[int, int] = field(default_factory=dict)
    counters: dict[int, int] = field(default_factory=dict)
    histograms: dict[int, int] = field(default_factory=dict)


@dataclass
class Carried:
    """What the old segment held when it was carried: the baseline for carrying, later, what
    the old generation did while it drained. ``dropped_sessions`` are bindings the new config
    cannot hold (their deployment or replica is gone): close their backend sessions."""

    counters: object
    histograms: dict[int, tuple[list[int], int]]
    consumed: dict[int, int]
    remote: dict[int, int]
    spend: dict[int, tuple[int, int]]
    dropped_sessions: list = field(default_factory=list)


@dataclass
class Counted:
    """What the old segment's counters and histograms held when they were carried (``carry_counts``)."""

    counters: object
    histograms: dict[int, tuple[list[int], int]]


def carry_counts(old, new, m: StateMap, since: Counted | None = None) -> Counted:
    """Add ``old``'s counters and histograms into ``new`` (those ``m`` maps): all of them, or what
    was counted since ``since``. A reload carries them apart from the rest (``process.hostwide``):
    when the new generation takes /metrics over, and at the end of the old one's drain."""
    now = Counted(old.counters.snapshot(), {i: old.histograms.raw(i) for i in m.histograms})
    _carry_counts(old, new, m, now, since)
    return now


def carry_state(old, new, m: StateMap, since: Carried | None = None) -> Carried:
    """Carry ``old``'s state into ``new``. The first call (``since`` None, at the roll)
    copies everything; a later call with its result adds what ``old`` counted, spent and
    consumed since (at the end of the old generation's drain)."""
    now = Carried(old.counters.snapshot(), {i: old.histograms.raw(i) for i in m.histograms},
                  consumed={i: old.bucket(i).consumed for i in m.buckets},
                  remote={i: old.bucket(i).remote for i in m.buckets},
                  spend={k: old.key_spend(k).export() for k in m.keys})
    _carry_counts(old, new, m, now, since)
    if since is None:
        for i, j in m.buckets.items():      # the use counters go on (a cluster publishes them) ...
            _add_use(new.bucket(j), now.consumed[i], now.remote[i])
            new.bucket(j).set_available(old.bucket(i).available())     # ... at the old level
        for k, j in m.keys.items():
            new.key_spend(j).restore(*now.spend[k])
        _carry_replicas(old, new, m)
        now.dropped_sessions = _carry_sessions(old, new, m)
        _carry_prefixes(old, new, m)
        return now
    for i, j in m.buckets.items():        # negative: corrections of requests admitted before the roll
        _add_use(new.bucket(j), now.consumed[i] - since.consumed[i], now.remote[i] - since.remote[i])
    for k, j in m.keys.items():
        (p1, s1), (p0, s0) = now.spend[k], since.spend[k]
        spent = s1 - (s0 if p1 == p0 else 0)
        if spent:
            new.key_spend(j).add(p1, spent)
    return now


def _add_use(bucket, own: int, remote: int) -> None:
    """Charge (or give back) ``own`` as this host's use and ``remote`` as other hosts', each to
    its own counter: a cluster sync publishes ``consumed`` as this host's, never ``remote``."""
    if own > 0:
        bucket.charge(own)
    elif own < 0:
        bucket.refund(-own)
    if remote > 0:
        bucket.charge_remote(remote)
    elif remote < 0:
        bucket.refund_remote(-remote)


def _carry_counts(old, new, m, now, since) -> None:
    """Counters and histograms are sums: add what old has (since the snapshot)."""
    for i, j in m.counters.items():
        delta = now.counters[i] if since is None else _int64(now.counters[i] - since.counters[i])
        if delta:
            new.counters.add(j, delta)
    for i, j in m.histograms.items():
        counts, sum_ns = now.histograms[i]
        if since is not None:
            before, before_sum = since.histograms[i]
            counts, sum_ns = [a - b for a, b in zip(counts, before)], sum_ns - before_sum
        if any(counts) or sum_ns:
            new.histograms.add_raw(j, counts, sum_ns)


def _int64(x: int) -> int:
    """``x`` wrapped to int64, as the counters' own adds wrap."""
    return (x + (1 << 63)) % (1 << 64) - (1 << 63)


def _carry_replicas(old, new, m) -> None:
    for (od, orr), (nd, nr) in m.replicas.items():
        new.breaker(nd, nr).restore(old.breaker(od, orr).export())
        if not old.replicas(od).healthy(orr):
            new.replicas(nd).set_healthy(nr, False)


def carry_sessions_back(failed, previous, m: StateMap) -> None:
    """A reload given up: the session bindings its roll moved into ``failed``'s segment go back to
    ``previous``'s (``m``: failed's indices -> previous's), but for the sessions bound there again
    meanwhile (newer); ``failed``'s table is emptied, so that none of its workers, if one drains,
    closes a backend session the running generation still uses."""
    if not (failed.sessions.capacity and previous.sessions.capacity):
        return
    _carry_sessions(failed, previous, m, keep_bound=True)
    for info in failed.sessions.entries():
        failed.sessions.remove(info.key)


def _carry_sessions(old, new, m, keep_bound: bool = False) -> list:
    dropped = []
    if not new.sessions.capacity:
        return old.sessions.entries() if old.sessions.capacity else []
    for info in (old.sessions.entries() if old.sessions.capacity else []):
        if keep_bound and new.sessions.get(info.key) is not None:
            continue
        d = m.deployments.get(info.deployment)
        replica = m.replicas.get((info.deployment, info.replica))
        backend = m.replicas.get((info.deployment, info.backend_replica)) if info.backend_replica >= 0 else (d, -1)
        if d is None or replica is None or backend is None:
            dropped.append(info)
            continue
        displaced = new.sessions.restore(info._replace(deployment=d, replica=replica[1], backend_replica=backend[1]))
        if displaced is not None:
            dropped.append(displaced)
    return dropped


def _carry_prefixes(old, new, m) -> None:
    for od, nd in m.deployments.items():
        src, dst = old.prefix(od), new.prefix(nd)
        if not src.capacity or not dst.capacity:
            continue
        bits = {orr: nr for (d, orr), (_, nr) in m.replicas.items() if d == od}
        for h, mask, idle_s in src.entries():
            moved = 0
            for orr, nr in bits.items():
                if mask >> orr & 1:
                    moved |= 1 << nr
            if moved:
                dst.restore(0, h, moved, idle_s)
