# Host leases (included by shm.pyx): per-host background work (session reaper,
# health prober, cluster sync, state flush) runs in exactly one worker at a time.
#
# One word per lease: (expires_ms << FI_LEASE_BITS) | (worker + 1), 0 when free.
# try_hold takes a free or expired lease, or renews the caller's own, with one
# CAS; a holder that dies stops renewing (taken over after its TTL) and
# reclaim_worker frees its leases at once.

cdef inline int64_t _lease_holder(int64_t word, int64_t now_ms) noexcept:
    """The live holder of a lease word, or -1 (free or expired)."""
    if word == 0 or now_ms >= (word >> FI_LEASE_BITS):
        return -1
    return (word & FI_LEASE_MASK) - 1


cdef int64_t _reclaim_leases(Segment seg, int64_t worker):
    cdef fi_lease *leases = <fi_lease *>(seg.base + seg.hdr.off_leases)
    cdef int64_t i, w, n = 0
    for i in range(FI_N_LEASES):
        w = fi_load(&leases[i].word)
        while w != 0 and (w & FI_LEASE_MASK) - 1 == worker:
            if fi_cas(&leases[i].word, &w, 0):
                n += 1
                break
    return n


cdef Lease _bind_lease(Segment seg, int64_t i):
    cdef Lease lease = Lease.__new__(Lease)
    lease.seg = seg
    lease.hdr = seg.hdr
    lease.word = &(<fi_lease *>(seg.base + seg.hdr.off_leases) + i).word
    lease.n_workers = seg.hdr.n_workers
    return lease


cdef class Lease:
    """A host-wide lease: at most one worker holds it at any time.

    The holder calls ``try_hold`` again well within ``ttl_s`` (e.g. every ttl/3) and checks
    the answer before each unit of work: a holder that stalls past its TTL loses the lease
    to the next worker that asks. A dead holder's lease is free at once after
    ``Segment.reclaim_worker``, or after its TTL otherwise. Times in milliseconds.
    """
    cdef Segment seg
    cdef fi_header *hdr
    cdef int64_t *word
    cdef int64_t n_workers

    def try_hold(self, int64_t worker, double ttl_s):
        """Take the lease if it is free or expired, or renew it if ``worker`` holds it, for
        ``ttl_s`` from now. True when ``worker`` holds it afterwards."""
        _enter(self.seg, worker, self.n_workers)
        if not (ttl_s >= 0):
            raise ValueError("ttl_s must be >= 0")
        cdef int64_t now_ms = _now(self.hdr) // 1000000
        cdef int64_t w = fi_load(self.word), holder
        cdef int64_t new = ((now_ms + fi_span_ns(ttl_s) // 1000000) << FI_LEASE_BITS) | (worker + 1)
        while True:
            holder = _lease_holder(w, now_ms)
            if holder >= 0 and holder != worker:
                return False
            if fi_cas(self.word, &w, new):
                return True

    def release(self, int64_t worker):
        """Give the lease up if ``worker`` holds it (expired or not); True when it did."""
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w = fi_load(self.word)
        while w != 0 and (w & FI_LEASE_MASK) - 1 == worker:
            if fi_cas(self.word, &w, 0):
                return True
        return False

    @property
    def holder(self):
        """The worker holding the lease now, or -1."""
        if self.seg.base == NULL:
            _closed()
        return _lease_holder(fi_load(self.word), _now(self.hdr) // 1000000)

    @property
    def expires_in_s(self):
        """Seconds until the holder's lease runs out (0.0 when nobody holds it)."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t now_ms = _now(self.hdr) // 1000000, w = fi_load(self.word)
        if _lease_holder(w, now_ms) < 0:
            return 0.0
        return ((w >> FI_LEASE_BITS) - now_ms) / 1e3
