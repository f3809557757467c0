"""Pure-Python reference for ``fastinfer._core.shm``: same API, same semantics.

Owns: an obvious, in-process model of the host-wide structures (admission
slots + priority queue, circuit breakers, counters, histograms), guarded by
one ``threading.RLock`` per segment. It is the oracle the tests compare the
compiled module against; production never imports it.

Must not touch: configuration parsing, HTTP, asyncio. Plain ints and floats
in and out. "Segments" live in a module-level dict (no /dev/shm, no fork
sharing): ``attach`` finds a segment created earlier in the same process.
"""
from __future__ import annotations

import array
import math
import os
import threading
import time
from bisect import bisect_left

from ..constants import (
    ALLOWED, BACKGROUND, CLOSED, CRITICAL, GRANTED_NOW, HALF_OPEN, HIGH, N_LEASES, NORMAL,
    OPEN, PROBE, QUEUE_FULL, REJECTED,
)
from ..layout import Layout
from ._arith import item, span_ns
from ..records import BreakerState, SessionInfo
from .grants import Grant, Ledger, LimitDraw
from .leases import Lease
from .series import RequestSeries
from .limits import BucketPair, KeyConcurrency, KeySpend, TokenBucket, rate_fields, rate_headers, take_all
from .prefix import PrefixIndex
from .routing import ReplicaLoad
from .sessions import SessionTable

__all__ = [
    "Layout", "Segment", "Admission", "Breaker", "Counters", "Histograms", "SegmentError", "TokenBucket",
    "BucketPair", "KeyConcurrency", "KeySpend", "LimitDraw", "Ledger", "Grant", "RequestSeries", "Lease",
    "ReplicaLoad", "SessionTable", "SessionInfo", "PrefixIndex",
    "BreakerState",
    "GRANTED_NOW", "QUEUE_FULL", "CLOSED", "OPEN", "HALF_OPEN", "ALLOWED", "REJECTED", "PROBE",
    "CRITICAL", "HIGH", "NORMAL", "BACKGROUND",
]

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_SUM_CLAMP = 9.0e18
_BRK_MAX_UNTIL = _I64_MAX >> 2     # what the compiled breaker's state word can hold


class SegmentError(ValueError):
    """A segment is missing, foreign, of another layout version, or closed."""


def _wrap64(v: int) -> int:
    return ((v - _I64_MIN) & 0xFFFFFFFFFFFFFFFF) + _I64_MIN


def _check_i64(v: int) -> int:
    v = int(v)
    if not _I64_MIN <= v <= _I64_MAX:
        raise OverflowError("value out of int64 range")
    return v


def _sum_ns(value: float) -> int:
    x = value * 1e9
    if x > _SUM_CLAMP:
        x = _SUM_CLAMP
    elif x < -_SUM_CLAMP:
        x = -_SUM_CLAMP
    return int(math.floor(x + 0.5))


class _State:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.lock = threading.RLock()
        self.workers = [[0, -1, False] for _ in range(layout.n_workers)]  # pid, fd, registered
        self.test_clock_ns = 0
        self.admissions = []
        self.breakers = []
        for d, (mc, qc, nr) in enumerate(layout.deployments):
            self.admissions.append(Admission(self, d, mc, qc))
            self.breakers.append([Breaker(self, layout.breakers[d]) for _ in range(nr)])
        self.counters = Counters(self, layout.n_counters)
        self.histograms = Histograms(self, layout.n_histograms, layout.bucket_bounds)
        self.buckets = [TokenBucket(self, r, b) for r, b in layout.token_buckets]
        self.key_concurrency = [KeyConcurrency(self, c) for c in layout.key_max_concurrency]
        self.key_spend = [KeySpend(self) for _ in layout.key_max_concurrency]
        self.leases = [Lease(self) for _ in range(N_LEASES)]
        self.replicas = [ReplicaLoad(self, w) for w in layout.replica_weights]
        self.sessions = SessionTable(self, layout.max_sessions, [d[2] for d in layout.deployments])
        self.prefix = [PrefixIndex(self, cap, d[2]) for cap, d in zip(layout.prefix_capacity, layout.deployments)]
        self.closed = False

    def now_ns(self) -> int:
        return self.test_clock_ns or time.monotonic_ns()

    def check_worker(self, worker):
        _check_worker(self, worker)


_REGISTRY: dict[str, _State] = {}
_REGISTRY_LOCK = threading.Lock()


def _clean_name(name: str) -> str:
    name = name[1:] if name.startswith("/") else name
    if not name or "/" in name or "\0" in name:
        raise ValueError(f"bad segment name {name!r}")
    return name


def _wake_fds(fds):
    one = (1).to_bytes(8, "little")
    for fd in fds:
        if fd >= 0:
            try:
                os.write(fd, one)
            except OSError:
                pass


class Segment:
    """In-process stand-in for the shared segment."""

    def __init__(self, name, state):
        self.name = name
        self._st = state
        self.layout = state.layout
        self.counters = state.counters
        self.histograms = state.histograms
        self.sessions = state.sessions

    @staticmethod
    def create(name, layout):
        name = _clean_name(name)
        with _REGISTRY_LOCK:
            if name in _REGISTRY:
                raise FileExistsError(f"shared-memory segment {name!r} already exists")
            st = _REGISTRY[name] = _State(layout)
        return Segment(name, st)

    @staticmethod
    def attach(name):
        name = _clean_name(name)
        with _REGISTRY_LOCK:
            st = _REGISTRY.get(name)
        if st is None:
            raise FileNotFoundError(f"shared-memory segment {name!r} does not exist")
        return Segment(name, st)

    def close(self):
        self._closed = True

    @property
    def closed(self):
        return getattr(self, "_closed", False)

    def unlink(self):
        with _REGISTRY_LOCK:
            if _REGISTRY.get(self.name) is self._st:
                del _REGISTRY[self.name]

    def set_test_clock(self, now_ns):
        """TESTS ONLY: read ``now_ns`` as the monotonic clock from now on; 0: the real clock."""
        if now_ns < 0:
            raise ValueError("now_ns must be >= 0")
        self._st.test_clock_ns = int(now_ns)

    def register_worker(self, worker, pid, wake_fd):
        st = self._st
        _check_worker(st, worker)
        with st.lock:
            st.workers[worker] = [int(pid), int(wake_fd), True]

    def reclaim_worker(self, worker):
        st = self._st
        _check_worker(st, worker)
        slots = tickets = probes = 0
        wake = []
        with st.lock:
            for adm in st.admissions:
                s, t, w = adm._reclaim(worker)
                slots += s
                tickets += t
                wake.extend(w)
            for reps in st.breakers:
                for b in reps:
                    n = b._owner.pop(worker, 0)
                    b._probes -= n
                    probes += n
            key_slots = sum(k._reclaim(worker) for k in st.key_concurrency)
            leases = sum(lease._reclaim(worker) for lease in st.leases)
            replica_load = sum(r._reclaim(worker) for r in st.replicas)
            st.workers[worker][0] = 0
        _wake_fds(wake)
        return {"slots": slots, "tickets": tickets, "probes": probes, "key_slots": key_slots,
                "leases": leases, "replica_in_flight": replica_load,
                "prefix_entries": 0}   # one lock: no writer is ever left holding an entry

    def admission(self, deployment):
        return item(self._st.admissions, deployment, "deployment")

    def replicas(self, deployment):
        return item(self._st.replicas, deployment, "deployment")

    def prefix(self, deployment):
        return item(self._st.prefix, deployment, "deployment")

    def bucket(self, index):
        return item(self._st.buckets, index, "token bucket")

    def bucket_pair(self, requests, tokens):
        for i in (requests, tokens):
            if not -1 <= i < len(self._st.buckets):
                raise IndexError("token bucket index out of range")
        if requests >= 0 and requests == tokens:
            raise ValueError("a pair is two different buckets")
        buckets = self._st.buckets
        return BucketPair(self._st, buckets[requests] if requests >= 0 else None,
                          buckets[tokens] if tokens >= 0 else None)

    def rate_headers(self, pairs):
        return rate_headers(pairs)

    def rate_fields(self, pairs):
        return rate_fields(pairs)

    def request_series(self, codes, other, timed=(-1, -1, -1), tokens=(-1, -1, -1), cost=-1, estimated=-1,
                       generation=-1, attempts=None):
        return RequestSeries(self.counters, self.histograms, dict(codes), other, timed, tokens, cost, estimated,
                             generation, attempts)

    def ledger(self, worker, estimate, add_spend):
        _check_worker(self._st, worker)
        return Ledger(worker, estimate, add_spend)

    def key_concurrency(self, key):
        return item(self._st.key_concurrency, key, "key")

    def key_spend(self, key):
        return item(self._st.key_spend, key, "key")

    def lease(self, index):
        return item(self._st.leases, index, "lease")

    def take_all(self, ids, amounts):
        return take_all(self._st, self._st.buckets, ids, amounts)

    def breaker(self, deployment, replica):
        return item(item(self._st.breakers, deployment, "deployment"), replica, "replica")

    def breaker_set(self, deployment, replicas, worker):
        _check_worker(self._st, worker)
        return BreakerSet([self.breaker(deployment, r) for r in range(replicas)], worker)


def _check_worker(st, worker):
    if not 0 <= worker < st.layout.n_workers:
        raise IndexError("worker index out of range")


class _Entry:
    __slots__ = ("worker", "prio", "seq", "granted")

    def __init__(self, worker, prio, seq):
        self.worker, self.prio, self.seq, self.granted = worker, prio, seq, False


class Admission:
    def __init__(self, st, d, max_concurrency, queue_capacity):
        self._st = st
        self.max_concurrency = max_concurrency
        self.queue_capacity = queue_capacity
        self._in_flight = 0
        self._waiting: dict[int, _Entry] = {}     # ticket -> entry
        self._granted: dict[int, dict[int, _Entry]] = {}   # worker -> {ticket: entry} (grant order)
        self._held: dict[int, int] = {}
        self._seq = 0
        self._next_ticket = 0

    # -- helpers (lock held)
    def _best(self):
        return min(self._waiting.items(), key=lambda kv: (kv[1].prio, kv[1].seq))

    def _hand_off(self):
        """A slot is free and someone waits: grant it. Returns the wake fd."""
        t, e = self._best()
        del self._waiting[t]
        e.granted = True
        self._granted.setdefault(e.worker, {})[t] = e
        return e.worker

    def try_acquire(self, worker):
        _check_worker(self._st, worker)
        with self._st.lock:
            if self._waiting or self._in_flight >= self.max_concurrency:
                return False
            self._in_flight += 1
            self._held[worker] = self._held.get(worker, 0) + 1
            return True

    def enqueue(self, worker, priority):
        _check_worker(self._st, worker)
        if not 0 <= priority <= 3:
            raise ValueError("priority must be 0 (critical) .. 3 (background)")
        with self._st.lock:
            if not self._waiting and self._in_flight < self.max_concurrency:
                self._in_flight += 1
                self._held[worker] = self._held.get(worker, 0) + 1
                return GRANTED_NOW
            if len(self._waiting) >= self.queue_capacity:
                return QUEUE_FULL
            t = self._next_ticket
            self._next_ticket += 1
            self._waiting[t] = _Entry(worker, priority, self._seq)
            self._seq += 1
            return t

    def take_granted(self, worker):
        _check_worker(self._st, worker)
        with self._st.lock:
            g = self._granted.pop(worker, None)
            if not g:
                return []
            self._held[worker] = self._held.get(worker, 0) + len(g)
            return list(g)

    def cancel(self, ticket):
        with self._st.lock:
            e = self._waiting.pop(ticket, None)
            if e is not None:
                return True
            for w, g in self._granted.items():
                if ticket in g:
                    del g[ticket]
                    self._held[w] = self._held.get(w, 0) + 1
                    return False
            raise ValueError(f"unknown or stale ticket {ticket}")

    def release(self, worker):
        _check_worker(self._st, worker)
        fd = -1
        with self._st.lock:
            if self._held.get(worker, 0) <= 0:
                raise RuntimeError(f"worker {worker} holds no slot of this deployment")
            self._held[worker] -= 1
            if self._waiting:
                woken = self._hand_off()
                fd = self._st.workers[woken][1]
            else:
                self._in_flight -= 1
                woken = -1
        _wake_fds([fd])
        return woken

    def reserve(self, n):
        with self._st.lock:
            if self._waiting:
                return 0
            take = max(0, min(n, self.max_concurrency - self._in_flight))
            self._in_flight += take
            return take

    def unreserve(self, n):
        fds = []
        with self._st.lock:
            for _ in range(n):
                if self._waiting:
                    fds.append(self._st.workers[self._hand_off()][1])
                else:
                    self._in_flight -= 1
        _wake_fds(fds)

    def _reclaim(self, worker):
        tickets = 0
        for t in [t for t, e in self._waiting.items() if e.worker == worker]:
            del self._waiting[t]
            tickets += 1
        g = self._granted.pop(worker, {})
        tickets += len(g)
        slots = len(g) + self._held.pop(worker, 0)
        wake = []
        for _ in range(slots):
            if self._waiting:
                wake.append(self._st.workers[self._hand_off()][1])
            else:
                self._in_flight -= 1
        return slots, tickets, wake

    @property
    def in_flight(self):
        return self._in_flight

    @property
    def queue_depth(self):
        return len(self._waiting)

    def counts(self):
        """(in_flight, queue_depth) as one consistent pair."""
        with self._st.lock:
            return (self._in_flight, len(self._waiting))

    def held_by(self, worker):
        """Slots ``worker`` owns (taken, not counting granted-untaken tickets)."""
        _check_worker(self._st, worker)
        return self._held.get(worker, 0)

    def queue_depth_by_priority(self):
        with self._st.lock:
            n = [0, 0, 0, 0]
            for e in self._waiting.values():
                n[e.prio] += 1
            return tuple(n)


class BreakerSet:
    """A deployment's replica breakers as one worker asks and tells them."""

    def __init__(self, breakers, worker):
        self.breakers = list(breakers)
        self.worker = worker

    def check(self, replica):
        return item(self.breakers, replica, "replica").check(self.worker)

    def record(self, replica, probe, failed):
        b = item(self.breakers, replica, "replica")
        if failed is None:
            if probe:
                b.release_probe(self.worker)
        elif failed:
            b.record_failure(self.worker, probe)
        else:
            b.record_success(self.worker, probe)

    def all_open(self):
        return all(b.state == OPEN for b in self.breakers)

    def retry_after_s(self):
        return min((b.retry_after_s for b in self.breakers if b.state != CLOSED), default=0.0)


class Breaker:
    def __init__(self, st, config):
        threshold, open_s, max_open_s, probes = config
        self._st = st
        self._lock = st.lock
        self._state = CLOSED           # CLOSED or OPEN (half-open is derived from time)
        self._until = 0
        self._threshold = threshold
        self._open_ns = span_ns(open_s)
        self._max_open_ns = span_ns(max_open_s)
        self._max_probes = probes
        self._failures = 0
        self._probes = 0
        self._cur_open_ns = self._open_ns
        self._half_marker = 0
        self._trans = [0, 0, 0]
        self._owner: dict[int, int] = {}

    def configure(self, failure_threshold, open_s, max_open_s, half_open_probes):
        if failure_threshold < 1 or half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be >= 1")
        if not (0 <= open_s <= max_open_s) or not math.isfinite(max_open_s):
            raise ValueError("need 0 <= open_s <= max_open_s (finite)")
        with self._lock:
            self._threshold = int(failure_threshold)
            self._open_ns = span_ns(open_s)
            self._max_open_ns = span_ns(max_open_s)
            self._max_probes = int(half_open_probes)
            self._cur_open_ns = min(max(self._cur_open_ns, self._open_ns), self._max_open_ns)

    @property
    def config(self):
        return (self._threshold, self._open_ns / 1e9, self._max_open_ns / 1e9, self._max_probes)

    def _half_open_now(self, now):
        return self._state == OPEN and now >= self._until

    def _mark_half(self):
        if self._half_marker != self._until:
            self._half_marker = self._until
            self._trans[2] += 1

    def check(self, worker):
        _check_worker(self._st, worker)
        with self._lock:
            if self._state == CLOSED:
                return ALLOWED
            now = self._st.now_ns()
            if now < self._until:
                return REJECTED
            self._mark_half()
            if self._probes >= self._max_probes:
                return REJECTED
            self._probes += 1
            self._owner[worker] = self._owner.get(worker, 0) + 1
            return PROBE

    def _drop_probe(self, worker):
        n = self._owner.get(worker, 0)
        if n > 0:
            self._owner[worker] = n - 1
            self._probes -= 1

    def record_success(self, worker, probe=False):
        _check_worker(self._st, worker)
        with self._lock:
            if not probe:
                if self._state == CLOSED:
                    self._failures = 0
                return
            self._drop_probe(worker)
            if self._half_open_now(self._st.now_ns()):
                self._state = CLOSED
                self._failures = 0
                self._cur_open_ns = self._open_ns
                self._trans[0] += 1

    def record_failure(self, worker, probe=False):
        _check_worker(self._st, worker)
        with self._lock:
            if not probe:
                if self._state == CLOSED:
                    self._failures += 1
                    if self._failures >= self._threshold:
                        self._cur_open_ns = self._open_ns
                        self._state = OPEN
                        self._until = min(self._st.now_ns() + self._open_ns, _BRK_MAX_UNTIL)
                        self._trans[1] += 1
                return
            self._drop_probe(worker)
            now = self._st.now_ns()
            if self._half_open_now(now):
                new = min(self._cur_open_ns * 2, self._max_open_ns)
                self._cur_open_ns = new
                self._until = min(now + new, _BRK_MAX_UNTIL)
                self._trans[1] += 1

    def release_probe(self, worker):
        _check_worker(self._st, worker)
        with self._lock:
            self._drop_probe(worker)

    def force_open(self, duration_s):
        if not (duration_s >= 0):
            raise ValueError("duration_s must be >= 0")
        with self._lock:
            now = self._st.now_ns()
            was_open = self._state == OPEN and now < self._until
            self._state = OPEN
            self._until = min(now + span_ns(duration_s), _BRK_MAX_UNTIL)
            if not was_open:
                self._trans[1] += 1

    def reset(self):
        with self._lock:
            if self._state != CLOSED:
                self._trans[0] += 1
            self._state = CLOSED
            self._failures = 0
            self._cur_open_ns = self._open_ns

    @property
    def state(self):
        with self._lock:
            if self._state == CLOSED:
                return CLOSED
            if self._st.now_ns() < self._until:
                return OPEN
            self._mark_half()
            return HALF_OPEN

    @property
    def retry_after_s(self):
        with self._lock:
            if self._state == CLOSED:
                return 0.0
            left = self._until - self._st.now_ns()
            return left / 1e9 if left > 0 else 0.0

    def export(self):
        with self._lock:
            state, left = CLOSED, 0
            if self._state == OPEN:
                left = max(self._until - self._st.now_ns(), 0)
                state = OPEN if left > 0 else HALF_OPEN
            return BreakerState(state, left / 1e9, self._cur_open_ns / 1e9, self._failures)

    def restore(self, state):
        kind, open_left_s, cur_open_s, failures = state
        if kind not in (CLOSED, OPEN, HALF_OPEN) or not open_left_s >= 0 or not cur_open_s >= 0:
            raise ValueError("not a breaker state")
        with self._lock:
            self._failures = max(int(failures), 0)
            self._cur_open_ns = min(max(span_ns(cur_open_s), self._open_ns), self._max_open_ns)
            if kind == CLOSED:
                self._state = CLOSED
            else:
                self._state = OPEN
                self._until = min(self._st.now_ns() + span_ns(open_left_s), _BRK_MAX_UNTIL)

    @property
    def transitions(self):
        return tuple(self._trans)

    @property
    def consecutive_failures(self):
        return self._failures

    @property
    def probes_in_flight(self):
        return self._probes


class Counters:
    def __init__(self, st, n):
        self._st = st
        self._v = [0] * n
        self.n = n

    def _idx(self, index):
        if not 0 <= index < self.n:
            raise IndexError("counter index out of range")
        return index

    def add(self, index, delta=1):
        i = self._idx(index)
        delta = _check_i64(delta)
        with self._st.lock:
            self._v[i] = _wrap64(self._v[i] + delta)

    def get(self, index):
        return self._v[self._idx(index)]

    def set(self, index, value):
        i = self._idx(index)
        self._v[i] = _check_i64(value)

    def snapshot(self):
        with self._st.lock:
            return array.array("q", self._v)

    def __len__(self):
        return self.n


class Histograms:
    def __init__(self, st, n, bounds):
        self._st = st
        self.n = n
        self.bucket_bounds = list(bounds)
        self._counts = [[0] * (len(bounds) + 1) for _ in range(n)]
        self._sum = [0] * n

    def _idx(self, index):
        if not 0 <= index < self.n:
            raise IndexError("histogram index out of range")
        return index

    def observe(self, index, value):
        i = self._idx(index)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("histogram observation must be finite")
        b = bisect_left(self.bucket_bounds, value)      # first bound >= value: Prometheus `le`
        with self._st.lock:
            self._counts[i][b] += 1
            self._sum[i] = _wrap64(self._sum[i] + _sum_ns(value))

    def raw(self, index):
        i = self._idx(index)
        with self._st.lock:
            return list(self._counts[i]), self._sum[i]

    def add_raw(self, index, counts, sum_ns):
        i = self._idx(index)
        if len(counts) != len(self.bucket_bounds) + 1:
            raise ValueError("counts must have one entry per bucket, +Inf included")
        with self._st.lock:
            for b, n in enumerate(counts):
                self._counts[i][b] += int(n)
            self._sum[i] = _wrap64(self._sum[i] + _check_i64(sum_ns))

    def snapshot(self, index):
        i = self._idx(index)
        with self._st.lock:
            cum, acc = [], 0
            for c in self._counts[i]:
                acc += c
                cum.append(acc)
            return cum, acc, self._sum[i] / 1e9

    def __len__(self):
        return self.n
