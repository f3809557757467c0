# Admission: host-wide concurrency slots + bounded priority queue of one deployment
# (included by shm.pyx).
#
# The admission word (in flight | waiting << 32) is the only thing the fast path
# touches: try_acquire is one CAS. Everything else (queue lists, entry pool,
# granted lists) is guarded by the deployment's robust mutex; `dirty` says the
# lists must be rebuilt from the per-entry states (a holder died, or a repair
# failed) before they are used.

cdef int _init_admission(Segment seg, int64_t d, int64_t mc, int64_t qc, int64_t nr,
                         int64_t breaker_base) except -1:
    cdef fi_header *h = seg.hdr
    cdef fi_admission *a = <fi_admission *>(seg.base + h.off_adm) + d
    cdef int64_t j, off_e = h.off_entries, k
    cdef fi_admission *prev
    for k in range(d):                      # pools are laid out in deployment order
        prev = <fi_admission *>(seg.base + h.off_adm) + k
        off_e += prev.pool_size * sizeof(fi_entry)
    a.word = 0
    a.max_concurrency = mc
    a.queue_capacity = qc
    a.n_replicas = nr
    a.breaker_base = breaker_base
    a.pool_size = mc + qc
    a.off_entries = off_e
    rc = fi_mutex_init(&a.mutex)
    if rc:
        raise OSError(rc, "pthread_mutex_init (process-shared, robust): " + os.strerror(rc))
    a.dirty = 0
    a.next_seq = 0
    for j in range(FI_N_PRIORITIES):
        a.head[j] = -1
        a.tail[j] = -1
        a.n_by_prio[j] = 0
    # The entries are not written: the segment is a new, ftruncated file, so they are zero (state
    # FREE, gen 0) and ``fresh`` hands them out in index order. Writing them would make every page of
    # the pool (64 bytes per max_concurrency + queue slot: 6 MiB at 100 000) resident in the process
    # that creates the segment, however few requests ever queue.
    a.free_head = -1
    a.fresh = 0
    return 0


cdef Admission _bind_admission(Segment seg, int64_t d):
    cdef fi_header *h = seg.hdr
    cdef Admission adm = Admission.__new__(Admission)
    adm.seg = seg
    adm.a = <fi_admission *>(seg.base + h.off_adm) + d
    adm.entries = <fi_entry *>(seg.base + adm.a.off_entries)
    adm.wd = <fi_wd *>(seg.base + h.off_wd)
    adm.workers = <fi_worker *>(seg.base + h.off_workers)
    adm.n_workers = h.n_workers
    adm.n_dep = h.n_deployments
    adm.d = d
    adm.maxc = adm.a.max_concurrency
    return adm


cdef class Admission:
    """Host-wide slots + bounded priority queue of one deployment."""
    cdef Segment seg
    cdef fi_admission *a
    cdef fi_entry *entries
    cdef fi_wd *wd
    cdef fi_worker *workers
    cdef int64_t n_workers, n_dep, d, maxc

    # ------------------------------------------------------------ helpers
    cdef inline fi_wd *_rec(self, int64_t worker) noexcept:
        return &self.wd[worker * self.n_dep + self.d]

    cdef int _lock(self) except -1:
        """Hold the deployment's mutex; rebuild the lists first when they are dirty. Never
        returns or raises with the mutex held and the lists unrepaired (atomics.h rule 7)."""
        if _robust_lock(&self.a.mutex, &self.a.dirty):
            try:
                self._repair()
            except BaseException:
                pthread_mutex_unlock(&self.a.mutex)   # still dirty: the next locker repairs
                raise
        return 0

    cdef inline void _unlock(self):
        pthread_mutex_unlock(&self.a.mutex)

    cdef void _unlink_prio(self, int64_t i):
        cdef fi_entry *e = &self.entries[i]
        cdef int64_t p = e.prio
        if e.prev >= 0:
            self.entries[e.prev].next = e.next
        else:
            self.a.head[p] = e.next
        if e.next >= 0:
            self.entries[e.next].prev = e.prev
        else:
            self.a.tail[p] = e.prev
        fi_store(&self.a.n_by_prio[p], self.a.n_by_prio[p] - 1)

    cdef void _link_prio(self, int64_t i):
        cdef fi_entry *e = &self.entries[i]
        cdef int64_t p = e.prio
        e.next = -1
        e.prev = self.a.tail[p]
        if e.prev >= 0:
            self.entries[e.prev].next = i
        else:
            self.a.head[p] = i
        self.a.tail[p] = i
        fi_store(&self.a.n_by_prio[p], self.a.n_by_prio[p] + 1)

    cdef void _link_granted(self, int64_t i):
        cdef fi_entry *e = &self.entries[i]
        cdef fi_wd *r = self._rec(e.worker)
        e.next = -1
        e.prev = r.g_tail
        if e.prev >= 0:
            self.entries[e.prev].next = i
        else:
            r.g_head = i
        r.g_tail = i
        fi_fetch_add(&r.g_count, 1)

    cdef void _unlink_granted(self, int64_t i):
        cdef fi_entry *e = &self.entries[i]
        cdef fi_wd *r = self._rec(e.worker)
        if e.prev >= 0:
            self.entries[e.prev].next = e.next
        else:
            r.g_head = e.next
        if e.next >= 0:
            self.entries[e.next].prev = e.prev
        else:
            r.g_tail = e.prev
        fi_fetch_add(&r.g_count, -1)

    cdef void _free(self, int64_t i):
        cdef fi_entry *e = &self.entries[i]
        e.state = FI_E_FREE
        e.worker = -1
        e.prev = -1
        e.next = self.a.free_head
        self.a.free_head = i

    cdef int64_t _take_entry(self):
        """Lock held, one known to be there: a freed entry (last freed first), else a never-used one."""
        cdef int64_t i = self.a.free_head
        if i >= 0:
            self.a.free_head = self.entries[i].next
            return i
        i = self.a.fresh
        self.a.fresh = i + 1
        return i

    cdef int64_t _grant_best(self):
        """Lock held, waiting > 0: pass the slot being freed to the best waiter.
        Returns the woken worker's wake fd (or -1)."""
        cdef int64_t p, i
        for p in range(FI_N_PRIORITIES):
            i = self.a.head[p]
            if i >= 0:
                self._unlink_prio(i)
                self.entries[i].state = FI_E_GRANTED
                self._link_granted(i)
                fi_fetch_add(&self.a.word, -WAIT_ONE)      # in_flight unchanged: direct handoff
                return self.entries[i].worker
        return -1

    cdef int64_t _wake_fd(self, int64_t worker):
        if worker < 0:
            return -1
        return fi_load(&self.workers[worker].wake_fd)

    # ------------------------------------------------------------ API
    def try_acquire(self, int64_t worker):
        """Take a free slot if nobody waits: one CAS on the admission word."""
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w = fi_load(&self.a.word)
        while True:
            if (w >> 32) != 0 or (w & LOW_MASK) >= self.maxc:
                return False
            if fi_cas(&self.a.word, &w, w + 1):
                break
        fi_fetch_add(&self.wd[worker * self.n_dep + self.d].held, 1)
        return True

    def enqueue(self, int64_t worker, int64_t priority):
        """Queue a request; returns a ticket >= 0, QUEUE_FULL (-1), or
        GRANTED_NOW (-2) when a slot was free (the caller owns it)."""
        _enter(self.seg, worker, self.n_workers)
        if <uint64_t>priority >= FI_N_PRIORITIES:
            raise ValueError("priority must be 0 (critical) .. 3 (background)")
        cdef int64_t w, i
        cdef fi_entry *e
        self._lock()
        try:
            w = fi_load(&self.a.word)
            while True:
                if (w >> 32) == 0 and (w & LOW_MASK) < self.maxc:
                    if fi_cas(&self.a.word, &w, w + 1):
                        fi_fetch_add(&self._rec(worker).held, 1)
                        return FI_GRANTED_NOW
                    continue
                if (w >> 32) >= self.a.queue_capacity:
                    return FI_QUEUE_FULL
                if self.a.free_head < 0 and self.a.fresh >= self.a.pool_size:
                    raise RuntimeError("admission entry pool exhausted (corrupt segment?)")
                if fi_cas(&self.a.word, &w, w + WAIT_ONE):
                    break
            i = self._take_entry()
            e = &self.entries[i]
            e.gen = (e.gen + 1) & 0xFFFFFFFF
            e.worker = worker
            e.prio = priority
            e.seq = self.a.next_seq
            self.a.next_seq += 1
            self._link_prio(i)
            e.state = FI_E_WAITING
            return (e.gen << FI_TICKET_BITS) | i
        finally:
            self._unlock()

    def take_granted(self, int64_t worker):
        """Tickets of ``worker`` granted a slot since the last call (grant order);
        the worker now owns one slot per ticket."""
        _enter(self.seg, worker, self.n_workers)
        cdef fi_wd *r = self._rec(worker)
        cdef int64_t i, nxt, n = 0
        if fi_load(&r.g_count) == 0:
            return []
        out = []
        self._lock()
        try:
            i = r.g_head
            while i >= 0:
                nxt = self.entries[i].next
                out.append((self.entries[i].gen << FI_TICKET_BITS) | i)
                self._free(i)
                n += 1
                i = nxt
            r.g_head = -1
            r.g_tail = -1
            fi_store(&r.g_count, 0)
            fi_fetch_add(&r.held, n)
        finally:
            self._unlock()
        return out

    def cancel(self, int64_t ticket):
        """True: removed before grant. False: it was already granted, the
        caller owns a slot and must release() it. ValueError: unknown/stale."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t i = ticket & FI_TICKET_MASK, gen = ticket >> FI_TICKET_BITS
        cdef fi_entry *e
        if ticket < 0 or i >= self.a.pool_size:
            raise ValueError(f"unknown or stale ticket {ticket}")
        self._lock()
        try:
            e = &self.entries[i]
            if e.state == FI_E_WAITING and e.gen == gen:
                self._unlink_prio(i)
                fi_fetch_add(&self.a.word, -WAIT_ONE)
                self._free(i)
                return True
            if e.state == FI_E_GRANTED and e.gen == gen:
                self._unlink_granted(i)
                fi_fetch_add(&self._rec(e.worker).held, 1)
                self._free(i)
                return False
        finally:
            self._unlock()
        raise ValueError(f"unknown or stale ticket {ticket}")

    def release(self, int64_t worker):
        """Free a slot of ``worker``. With waiters it passes directly to the best
        one host-wide, whose wake fd is written. Returns the woken worker or -1."""
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t *held = &self.wd[worker * self.n_dep + self.d].held
        cdef int64_t h = fi_load(held)
        while True:
            if h <= 0:
                raise RuntimeError(f"worker {worker} holds no slot of this deployment")
            if fi_cas(held, &h, h - 1):
                break
        try:
            return self._free_slot()
        except BaseException:
            fi_fetch_add(held, 1)       # not released: the caller (or reclaim) still owns it
            raise

    def reserve(self, int64_t n):
        """Count up to ``n`` slots in flight that no worker holds: a reload's previous generation's
        requests, which end in their own segment, so that the new one admits only what is left of
        ``max_concurrency`` (the supervisor's, ``process.hostwide``). Taken as free slots are, never
        past the limit nor ahead of a waiter. Returns how many were taken."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.a.word), take
        while True:
            take = min(n, self.maxc - (w & LOW_MASK))
            if (w >> 32) != 0 or take <= 0:
                return 0
            if fi_cas(&self.a.word, &w, w + take):
                return take

    def unreserve(self, int64_t n):
        """Give back ``n`` slots ``reserve`` took, each to the best waiter host-wide if one waits."""
        if self.seg.base == NULL:
            _closed()
        for _ in range(n):
            self._free_slot()

    cdef int64_t _free_slot(self) except -2:
        """A slot in flight is free: it passes to the best waiter host-wide (whose wake fd is
        written), else it is uncounted. Returns the woken worker or -1."""
        cdef int64_t w = fi_load(&self.a.word), woken = -1
        while (w >> 32) == 0:
            if fi_cas(&self.a.word, &w, w - 1):
                return -1
        # someone waits: hand the slot over under the lock
        self._lock()
        try:
            w = fi_load(&self.a.word)
            if (w >> 32) == 0:
                fi_fetch_add(&self.a.word, -1)
            else:
                woken = self._grant_best()
                if woken < 0:           # counted waiters without entries: repair, then free
                    self._repair()
                    fi_fetch_add(&self.a.word, -1)
        finally:
            self._unlock()
        if woken >= 0:
            fi_wake(<int>self._wake_fd(woken))
        return woken

    cdef tuple _reclaim(self, int64_t worker):
        cdef int64_t i, slots = 0, tickets = 0, woken
        cdef fi_entry *e
        cdef fi_wd *r = self._rec(worker)
        fds = []
        self._lock()
        try:
            for i in range(min(self.a.fresh, self.a.pool_size)):    # the rest were never used
                e = &self.entries[i]
                if e.worker != worker:
                    continue
                if e.state == FI_E_WAITING:
                    self._unlink_prio(i)
                    fi_fetch_add(&self.a.word, -WAIT_ONE)
                    self._free(i)
                    tickets += 1
                elif e.state == FI_E_GRANTED:
                    self._free(i)          # its slot is counted below
                    tickets += 1
                    slots += 1
            r.g_head = -1
            r.g_tail = -1
            fi_store(&r.g_count, 0)
            slots += fi_xchg(&r.held, 0)
            for i in range(slots):
                woken = -1
                if (fi_load(&self.a.word) >> 32) != 0:
                    woken = self._grant_best()
                if woken >= 0:
                    fds.append(self._wake_fd(woken))
                else:
                    fi_fetch_add(&self.a.word, -1)
        finally:
            self._unlock()
        for fd in fds:
            fi_wake(<int>fd)
        return slots, tickets

    cdef int _repair(self) except -1:
        """Lock held (owner died mid-update, or counts disagree): rebuild the
        priority lists, granted lists and free list from the entry states, fix
        the waiting count, and grant free slots to waiters. ``dirty`` stays set
        until it has succeeded, so a repair cut short is done again."""
        cdef fi_admission *a = self.a
        cdef fi_entry *e
        cdef fi_wd *r
        cdef int64_t i, p, w, nw, maxseq = -1, woken
        a.dirty = 1
        _maybe_fail_repair()
        waiting = []
        granted = []
        for p in range(FI_N_PRIORITIES):
            a.head[p] = -1
            a.tail[p] = -1
            a.n_by_prio[p] = 0
        for i in range(self.n_workers):
            r = self._rec(i)
            r.g_head = -1
            r.g_tail = -1
            fi_store(&r.g_count, 0)
        a.free_head = -1
        a.fresh = a.pool_size       # every entry is read below, and every free one put on the list
        for i in range(a.pool_size - 1, -1, -1):
            e = &self.entries[i]
            if e.state == FI_E_WAITING and 0 <= e.worker < self.n_workers and 0 <= e.prio < FI_N_PRIORITIES:
                waiting.append((e.seq, i))
            elif e.state == FI_E_GRANTED and 0 <= e.worker < self.n_workers:
                granted.append((e.seq, i))
            else:
                self._free(i)
            if e.state != FI_E_FREE and e.seq > maxseq:
                maxseq = e.seq
        for _, i in sorted(waiting):
            self._link_prio(i)
        for _, i in sorted(granted):
            self._link_granted(i)
        if a.next_seq <= maxseq:
            a.next_seq = maxseq + 1
        nw = len(waiting)
        w = fi_load(&a.word)
        while not fi_cas(&a.word, &w, (nw << 32) | (w & LOW_MASK)):
            pass
        # restore "waiting > 0 => all slots busy"
        while True:
            w = fi_load(&a.word)
            if (w >> 32) == 0 or (w & LOW_MASK) >= self.maxc:
                break
            if fi_cas(&a.word, &w, w + 1):          # take a free slot ...
                woken = self._grant_best()           # ... and hand it to the best waiter
                if woken >= 0:
                    fi_wake(<int>self._wake_fd(woken))
        a.dirty = 0
        return 0

    def _debug_lock(self, bint corrupt=False):
        """TESTS ONLY: take the lock and never release it (the caller then dies,
        leaving the robust mutex EOWNERDEAD). corrupt=True also counts a phantom
        waiter, as if the owner died in the middle of enqueue."""
        self._lock()
        if corrupt:
            fi_fetch_add(&self.a.word, WAIT_ONE)

    def _debug_is_locked(self):
        """TESTS ONLY: is the mutex held by anyone (a trylock that fails)?"""
        if self.seg.base == NULL:
            _closed()
        cdef int r = pthread_mutex_trylock(&self.a.mutex)
        if r == 0 or r == EOWNERDEAD:
            if r == EOWNERDEAD:
                self.a.dirty = 1
                pthread_mutex_consistent(&self.a.mutex)
            pthread_mutex_unlock(&self.a.mutex)
            return False
        return True

    @property
    def in_flight(self):
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.a.word) & LOW_MASK

    def counts(self):
        """(in_flight, queue_depth) from one atomic load: a consistent pair."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.a.word)
        return (w & LOW_MASK, w >> 32)

    @property
    def queue_depth(self):
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.a.word) >> 32

    @property
    def max_concurrency(self):
        return self.maxc

    @property
    def queue_capacity(self):
        if self.seg.base == NULL:
            _closed()
        return self.a.queue_capacity

    def queue_depth_by_priority(self):
        if self.seg.base == NULL:
            _closed()
        return (fi_load(&self.a.n_by_prio[0]), fi_load(&self.a.n_by_prio[1]),
                fi_load(&self.a.n_by_prio[2]), fi_load(&self.a.n_by_prio[3]))

    def held_by(self, int64_t worker):
        """Slots ``worker`` owns (taken, not counting granted-untaken tickets)."""
        _enter(self.seg, worker, self.n_workers)
        return fi_load(&self._rec(worker).held)


