"""Pure-Python reference of ``fastinfer._core.shm.SessionTable``.

The same stripes of 64 slots, the same hash, probe order, tombstones and LRU
victim choice as the compiled table, written plainly, so that every call gives
the same answer (which binding is evicted, which slot a key lands in). Guarded
by the segment's one lock instead of a mutex per stripe.
"""
from __future__ import annotations

from ..constants import SESSION_CLOSING, SESSION_NONE, SESSION_STRIPE
from ..records import SessionInfo
from ._arith import mix64, span_ns

EMPTY, LIVE, TOMB = 0, 1, 2


def _unpack(key) -> tuple[int, int]:
    if not isinstance(key, bytes):
        raise TypeError("a session key is bytes")
    if len(key) != 16:
        raise ValueError("a session key is 16 bytes (e.g. a 128-bit hash)")
    return int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")


class _Slot:
    __slots__ = ("state", "hi", "lo", "last_use", "ttl", "deployment", "replica", "bstate", "brep")

    def __init__(self):
        self.state = EMPTY

    def expired(self, now):
        return now - self.last_use >= self.ttl

    def info(self, now):
        return SessionInfo(self.hi.to_bytes(8, "little") + self.lo.to_bytes(8, "little"), self.deployment,
                           self.replica, self.bstate, self.brep, (now - self.last_use) / 1e9, self.ttl / 1e9)


class SessionTable:
    def __init__(self, st, max_sessions: int, replicas_per_deployment: list[int]):
        self._st = st
        self.max_sessions = max_sessions
        self._n_stripes = (max_sessions * 3 // 2 + SESSION_STRIPE - 1) // SESSION_STRIPE   # 1.5 slots each
        self._stripes = [[_Slot() for _ in range(SESSION_STRIPE)] for _ in range(self._n_stripes)]
        self._live = [0] * self._n_stripes
        self._evictions = 0
        self._cursor = 0
        self._replicas = replicas_per_deployment

    @property
    def capacity(self):
        return self._n_stripes * SESSION_STRIPE

    @property
    def occupancy(self):
        return sum(self._live)

    @property
    def evictions(self):
        return self._evictions

    # -------------------------------------------------------------- slots
    def _locate(self, key):
        hi, lo = _unpack(key)
        h = mix64(lo ^ mix64(hi))
        if self._n_stripes == 0:
            raise ValueError("the segment has no session table (max_sessions = 0)")
        s = h % self._n_stripes
        return hi, lo, s, self._stripes[s], [((h >> 32) % SESSION_STRIPE + j) % SESSION_STRIPE
                                            for j in range(SESSION_STRIPE)]

    @staticmethod
    def _find(slots, path, hi, lo):
        for p in path:
            if slots[p].state == EMPTY:
                return -1
            if slots[p].state == LIVE and slots[p].hi == hi and slots[p].lo == lo:
                return p
        return -1

    @staticmethod
    def _victim(slots, now):
        return min(range(SESSION_STRIPE),
                   key=lambda j: (not slots[j].expired(now), slots[j].last_use, slots[j].hi, slots[j].lo))

    @staticmethod
    def _write(slot, hi, lo, deployment, replica, ttl, last_use, bstate, brep):
        slot.state, slot.hi, slot.lo, slot.deployment, slot.replica = LIVE, hi, lo, deployment, replica
        slot.bstate, slot.brep, slot.ttl, slot.last_use = bstate, brep, ttl, last_use

    def _vacate(self, s, slots, p):
        slots[p].state = TOMB
        self._live[s] -= 1
        if slots[(p + 1) % SESSION_STRIPE].state != EMPTY:
            return
        while slots[p].state == TOMB:
            slots[p].state = EMPTY
            p = (p - 1) % SESSION_STRIPE

    def _place(self, s, slots, path, hi, lo, deployment, replica, ttl, last_use, bstate, brep, now):
        free = [p for p in path if slots[p].state != LIVE]
        displaced = None
        if free:
            p = free[0]
            self._live[s] += 1
        else:
            p = self._victim(slots, now)
            displaced = slots[p].info(now)
            if not slots[p].expired(now):
                self._evictions += 1
        self._write(slots[p], hi, lo, deployment, replica, ttl, last_use, bstate, brep)
        return displaced

    def _check_binding(self, deployment, replica):
        if not 0 <= deployment < len(self._replicas):
            raise IndexError("deployment index out of range")
        if not 0 <= replica < self._replicas[deployment]:
            raise IndexError("replica index out of range")

    # -------------------------------------------------------------- API
    def touch(self, key):
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            now = self._st.now_ns()
            p = self._find(slots, path, hi, lo)
            if p < 0 or slots[p].expired(now):
                return -1
            slots[p].last_use = now
            return slots[p].replica

    def get(self, key):
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            p = self._find(slots, path, hi, lo)
            return None if p < 0 else slots[p].info(self._st.now_ns())

    def bind(self, key, deployment, replica, ttl_s):
        self._check_binding(deployment, replica)
        if not ttl_s >= 0:
            raise ValueError("ttl_s must be >= 0")
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            now = self._st.now_ns()
            p = self._find(slots, path, hi, lo)
            if p >= 0 and not slots[p].expired(now):
                slots[p].last_use = now
                return slots[p].replica, None
            if p >= 0:
                displaced = slots[p].info(now)
                self._write(slots[p], hi, lo, deployment, replica, span_ns(ttl_s), now, SESSION_NONE, -1)
                return replica, displaced
            return replica, self._place(s, slots, path, hi, lo, deployment, replica, span_ns(ttl_s), now,
                                        SESSION_NONE, -1, now)

    def rebind(self, key, from_replica, to_replica):
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            now = self._st.now_ns()
            p = self._find(slots, path, hi, lo)
            if p < 0 or slots[p].expired(now):
                return -1, None
            slot = slots[p]
            self._check_binding(slot.deployment, to_replica)
            slot.last_use = now
            if slot.replica != from_replica:
                return slot.replica, None
            previous = slot.info(now)
            slot.replica, slot.bstate, slot.brep = to_replica, SESSION_NONE, -1
            return to_replica, previous

    def remove(self, key):
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            p = self._find(slots, path, hi, lo)
            if p < 0:
                return None
            info = slots[p].info(self._st.now_ns())
            self._vacate(s, slots, p)
            return info

    def backend_transition(self, key, expect, new, replica=-1):
        if not (SESSION_NONE <= expect <= SESSION_CLOSING and SESSION_NONE <= new <= SESSION_CLOSING):
            raise ValueError("backend session states are SESSION_NONE .. SESSION_CLOSING")
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            p = self._find(slots, path, hi, lo)
            if p < 0 or slots[p].bstate != expect:
                return False
            if replica >= 0:
                self._check_binding(slots[p].deployment, replica)
            slots[p].bstate = new
            if new == SESSION_NONE:
                slots[p].brep = -1
            elif replica >= 0:
                slots[p].brep = replica
            return True

    def expire(self, max_n=256):
        out = []
        with self._st.lock:
            if self._n_stripes == 0:
                return out
            start = sidx = self._cursor
            for k in range(self._n_stripes):
                if len(out) >= max_n:
                    break
                sidx = (start + k) % self._n_stripes
                slots, now = self._stripes[sidx], self._st.now_ns()
                for j in range(SESSION_STRIPE):
                    if len(out) >= max_n:
                        break
                    if slots[j].state == LIVE and slots[j].expired(now):
                        out.append(slots[j].info(now))
                        self._vacate(sidx, slots, j)
                else:
                    sidx += 1
            self._cursor = sidx % self._n_stripes
        return out

    def entries(self):
        with self._st.lock:
            now = self._st.now_ns()
            return [slot.info(now) for slots in self._stripes for slot in slots if slot.state == LIVE]

    def restore(self, info):
        key, deployment, replica, bstate, brep, idle_s, ttl_s = info
        self._check_binding(deployment, replica)
        if brep != -1:
            self._check_binding(deployment, brep)
        if not (SESSION_NONE <= bstate <= SESSION_CLOSING) or not (idle_s >= 0 and ttl_s >= 0):
            raise ValueError("not a session binding")
        with self._st.lock:
            hi, lo, s, slots, path = self._locate(key)
            now = self._st.now_ns()
            p = self._find(slots, path, hi, lo)
            last_use = now - span_ns(idle_s)
            if p >= 0:
                displaced = slots[p].info(now)
                self._write(slots[p], hi, lo, deployment, replica, span_ns(ttl_s), last_use, bstate, brep)
                return displaced
            return self._place(s, slots, path, hi, lo, deployment, replica, span_ns(ttl_s), last_use,
                               bstate, brep, now)
