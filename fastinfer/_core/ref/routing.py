"""Pure-Python reference of ``fastinfer._core.shm.ReplicaLoad``: the same decisions
(policy, round-robin turn, tie-breaking, weights, two random choices) made the
obvious way under the segment's one lock."""
from __future__ import annotations

import math
from fractions import Fraction

from ..constants import EWMA_ALPHA, LATENCY, LEAST_LOADED, NO_REPLICA, POWER_OF_TWO, ROUND_ROBIN
from ._arith import span_ns


class ReplicaLoad:
    def __init__(self, st, weights: list[int]):
        self._st = st
        self._weights = list(weights)
        self.n_replicas = len(weights)
        self._in_flight = [0] * self.n_replicas
        self._ewma = [0] * self.n_replicas
        self._unhealthy = 0
        self._rr = 0
        self._held: dict[tuple[int, int], int] = {}

    def _check(self, worker, replica):
        self._st.check_worker(worker)
        if not 0 <= replica < self.n_replicas:
            raise IndexError("replica index out of range")

    def pick_and_start(self, worker, policy, avoid_mask=0, rand=0):
        self._st.check_worker(worker)
        if policy not in (ROUND_ROBIN, LEAST_LOADED, POWER_OF_TWO, LATENCY):
            raise ValueError(f"unknown routing policy {policy}")
        if avoid_mask < 0 or rand < 0:
            raise OverflowError("masks and rand are unsigned 64-bit")
        with self._st.lock:
            allowed = [i for i in range(self.n_replicas) if not (avoid_mask | self._unhealthy) >> i & 1]
            if not allowed:
                return NO_REPLICA
            turn, self._rr = self._rr, self._rr + 1
            if policy == ROUND_ROBIN:
                point = turn % sum(self._weights[i] for i in allowed)
                for i in allowed:
                    point -= self._weights[i]
                    if point < 0:
                        break
            elif policy == POWER_OF_TWO:
                m = len(allowed)
                a = rand % m
                b = (rand // m) % (m - 1) if m > 1 else a
                if m > 1 and b >= a:
                    b += 1
                a, b = allowed[a], allowed[b]
                i = b if self._in_flight[b] * self._weights[a] < self._in_flight[a] * self._weights[b] else a
            else:
                start = turn % self.n_replicas
                i = min(allowed, key=lambda r: self._exact_key(r, start, policy == LATENCY))
            self._in_flight[i] += 1
            self._held[(worker, i)] = self._held.get((worker, i), 0) + 1
            return i

    def _exact_key(self, i, start, by_latency):
        # in_flight / weight compared exactly, as the compiled core does (cross-multiplication)
        return (self._latency_cost(i) if by_latency else 0.0, Fraction(self._in_flight[i], self._weights[i]),
                (i - start) % self.n_replicas)

    def _latency_cost(self, i):
        """Peak-EWMA's cost: the average answer time times the requests the replica would then
        hold, per weight; unmeasured, free while idle and out of the running while its first is out
        (the same double arithmetic as the compiled core)."""
        ewma, v = self._ewma[i], self._in_flight[i]
        if ewma == 0:
            return 0.0 if v == 0 else math.inf
        return float(ewma) * float(v + 1) / float(self._weights[i])

    def start(self, worker, replica):
        self._check(worker, replica)
        with self._st.lock:
            self._in_flight[replica] += 1
            self._held[(worker, replica)] = self._held.get((worker, replica), 0) + 1

    def finish(self, worker, replica, latency_s=-1.0):
        self._check(worker, replica)
        with self._st.lock:
            if self._held.get((worker, replica), 0) <= 0:
                raise RuntimeError(f"worker {worker} has no request on replica {replica}")
            self._held[(worker, replica)] -= 1
            self._in_flight[replica] -= 1
            if latency_s >= 0:
                x = max(span_ns(latency_s), 1)
                old = self._ewma[replica]
                self._ewma[replica] = x if old == 0 else max(int(old + EWMA_ALPHA * (x - old) + 0.5), 1)

    def set_healthy(self, replica, healthy):
        self._check(0, replica)
        with self._st.lock:
            was = not self._unhealthy >> replica & 1
            if healthy:
                self._unhealthy &= ~(1 << replica)
            else:
                self._unhealthy |= 1 << replica
            return was

    def healthy(self, replica):
        self._check(0, replica)
        return not self._unhealthy >> replica & 1

    @property
    def healthy_mask(self):
        return ((1 << self.n_replicas) - 1) & ~self._unhealthy

    def in_flight(self, replica):
        self._check(0, replica)
        return self._in_flight[replica]

    def latency_s(self, replica):
        self._check(0, replica)
        return self._ewma[replica] / 1e9

    def weight(self, replica):
        self._check(0, replica)
        return self._weights[replica]

    def held_by(self, worker, replica):
        self._check(worker, replica)
        return self._held.get((worker, replica), 0)

    def _reclaim(self, worker) -> int:
        total = 0
        for (w, i), n in list(self._held.items()):
            if w == worker and n:
                self._in_flight[i] -= n
                total += n
                del self._held[(w, i)]
        return total
