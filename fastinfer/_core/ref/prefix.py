"""Pure-Python reference of ``fastinfer._core.shm.PrefixIndex``: the same sets of 8
entries, the same hash to set, the same victim choice, under the segment's one lock
(so no entry is ever found locked and no update is lost)."""
from __future__ import annotations

import array

from ..constants import PREFIX_WAYS
from ._arith import mix64, span_ns

_M64 = (1 << 64) - 1


def _hashes(hashes) -> list[int]:
    if isinstance(hashes, (bytes, bytearray)):
        if len(hashes) % 8:
            raise ValueError("a hash buffer holds whole uint64 values (a multiple of 8 bytes)")
        return list(array.array("Q", hashes))
    view = memoryview(hashes)
    if view.itemsize != 8 or view.format not in ("Q", "L", "<Q", "=Q", "<L", "=L"):
        raise ValueError("hashes must be uint64 (a numpy uint64 array, or bytes)")
    return [int(h) for h in view.tolist()]


class PrefixIndex:
    def __init__(self, st, capacity: int, n_replicas: int):
        self._st = st
        self._n_sets = (capacity + PREFIX_WAYS - 1) // PREFIX_WAYS
        self._sets = [[[0, 0, 0] for _ in range(PREFIX_WAYS)] for _ in range(self._n_sets)]  # hash, mask, last
        self.n_replicas = n_replicas

    @property
    def capacity(self):
        return self._n_sets * PREFIX_WAYS

    @property
    def nbytes(self):
        return self.capacity * 32

    @property
    def occupancy(self):
        return sum(1 for s in self._sets for e in s if e[1])

    def _set(self, h):
        return self._sets[mix64(h) % self._n_sets]

    def _lookup(self, h):
        m = 0
        for eh, em, _ in self._set(h):
            if em and eh == h:
                m |= em
        return m

    def match(self, hashes):
        hs = _hashes(hashes)
        depth = [0] * self.n_replicas
        if not self._n_sets:
            return depth
        with self._st.lock:
            for r in range(self.n_replicas):
                for i, h in enumerate(hs):
                    if not self._lookup(h) >> r & 1:
                        break
                    depth[r] = i + 1
        return depth

    def _check(self, worker, replica):
        self._st.check_worker(worker)
        if not 0 <= replica < self.n_replicas:
            raise IndexError("replica index out of range")

    def insert(self, worker, hashes, replica):
        self._check(worker, replica)
        hs = _hashes(hashes)
        if not self._n_sets:
            return
        with self._st.lock:
            now = self._st.now_ns()
            for h in hs:
                self._insert_one(h, 1 << replica, now)

    def _insert_one(self, h, bit, now):
        ways = self._set(h)
        for e in ways:
            if e[1] and e[0] == h:
                e[1] |= bit
                e[2] = now
                return
        empty = [e for e in ways if not e[1]]
        victim = empty[0] if empty else min(ways, key=lambda e: e[2])   # first of the oldest
        victim[:] = [h, bit, now]

    def forget_replica(self, worker, replica):
        self._check(worker, replica)
        n = 0
        with self._st.lock:
            for ways in self._sets:
                for e in ways:
                    if e[1] >> replica & 1:
                        e[1] &= ~(1 << replica)
                        if not e[1]:
                            e[0] = 0
                        n += 1
        return n

    def entries(self):
        with self._st.lock:
            now = self._st.now_ns()
            return [(h, m, (now - t) / 1e9) for ways in self._sets for h, m, t in ways if m]

    def restore(self, worker, hash, mask, idle_s):
        self._st.check_worker(worker)
        mask &= (1 << self.n_replicas) - 1
        if not self._n_sets or not mask:
            return
        with self._st.lock:
            then = self._st.now_ns() - span_ns(idle_s)
            while mask:
                self._insert_one(int(hash) & _M64, mask & -mask, then)
                mask &= mask - 1
