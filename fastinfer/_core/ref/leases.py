"""Pure-Python reference of ``fastinfer._core.shm.Lease``: same API, same millisecond
arithmetic. Guarded by the segment's one lock."""
from __future__ import annotations

from ._arith import span_ns


class Lease:
    def __init__(self, st):
        self._st = st
        self._worker = -1
        self._expires_ms = 0

    def _now_ms(self):
        return self._st.now_ns() // 1_000_000

    def _holder(self, now_ms):
        return self._worker if self._worker >= 0 and now_ms < self._expires_ms else -1

    def try_hold(self, worker, ttl_s):
        self._st.check_worker(worker)
        if not ttl_s >= 0:
            raise ValueError("ttl_s must be >= 0")
        with self._st.lock:
            now_ms = self._now_ms()
            if self._holder(now_ms) not in (-1, worker):
                return False
            self._worker, self._expires_ms = worker, now_ms + span_ns(ttl_s) // 1_000_000
            return True

    def release(self, worker):
        self._st.check_worker(worker)
        with self._st.lock:
            if self._worker == worker:
                self._worker = -1
                return True
            return False

    def _reclaim(self, worker) -> int:
        return 1 if self._worker == worker and self.release(worker) else 0

    @property
    def holder(self):
        return self._holder(self._now_ms())

    @property
    def expires_in_s(self):
        now_ms = self._now_ms()
        return (self._expires_ms - now_ms) / 1e3 if self._holder(now_ms) >= 0 else 0.0
