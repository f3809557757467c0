# Session affinity table (included by shm.pyx): session key -> replica, host-wide.
#
# Fixed capacity, split into stripes of FI_SESSION_STRIPE (64) slots, each stripe
# guarded by its own robust mutex. A key hashes to one stripe and a start slot in
# it; linear probing within the stripe (wrapping) finds it, stopping at the first
# EMPTY slot. Removal leaves a TOMB, turned back to EMPTY when the next slot is
# EMPTY (so probes stay short); a stripe with no free slot evicts its least
# recently used binding (a bounded-window LRU: exact within the stripe's 64).
#
# Crash safety (atomics.h rule 7): a slot being filled is marked WRITING first and
# LIVE last; a process that dies holding a stripe leaves at most one WRITING slot,
# which the next locker (EOWNERDEAD -> dirty) turns into a TOMB before recounting
# the stripe. Every other change is to a LIVE slot's fields in an order that
# leaves a meaningful binding at every step (replica first, backend state after).

from .records import SessionInfo


cdef inline uint64_t _session_hash(uint64_t hi, uint64_t lo) noexcept:
    return fi_mix64(lo ^ fi_mix64(hi))


cdef int _unpack_key(bytes key, uint64_t *hi, uint64_t *lo) except -1:
    if key is None or len(key) != 16:
        raise ValueError("a session key is 16 bytes (e.g. a 128-bit hash)")
    cdef const unsigned char *p = key
    cdef int i
    hi[0] = 0
    lo[0] = 0
    for i in range(8):
        hi[0] |= (<uint64_t>p[i]) << (8 * i)
        lo[0] |= (<uint64_t>p[8 + i]) << (8 * i)
    return 0


cdef bytes _pack_key(uint64_t hi, uint64_t lo):
    cdef unsigned char out[16]
    cdef int i
    for i in range(8):
        out[i] = (hi >> (8 * i)) & 0xFF
        out[8 + i] = (lo >> (8 * i)) & 0xFF
    return out[:16]


cdef inline bint _expired(fi_session *s, int64_t now) noexcept:
    return now - s.last_use_ns >= s.ttl_ns


cdef object _info(fi_session *s, int64_t now):
    return SessionInfo(_pack_key(s.key_hi, s.key_lo), s.deployment, s.replica, s.backend_state,
                       s.backend_replica, (now - s.last_use_ns) / 1e9, s.ttl_ns / 1e9)


cdef class SessionTable:
    """Session key -> replica bindings of the whole host (``server.max_sessions`` of them).

    The table has 1.5 slots per binding in stripes of 64; a key lives in one stripe, and a
    stripe whose 64 slots are taken evicts its least recently used binding: LRU within a
    window of 64, not table-wide. With max_sessions bindings in it, a stripe holds 43 on
    average and overflows with a probability of about 1 in 2000.

    Keys are 16 bytes: a 128-bit hash the caller computes from the gateway key's namespace,
    the deployment and the session id, so tenants never share a binding. A binding expires
    ``ttl_s`` after its last use (``touch``, ``bind``, ``rebind``); expired bindings stay
    until ``expire`` (the host's reaper) or a new ``bind`` of the same key takes them, and
    both hand them back so their backend sessions can be closed. When a stripe is full,
    ``bind`` evicts its least recently used binding (expired ones first) and hands it back too.

    Backend sessions (SGLang ``open_session``) move NONE -> OPENING -> OPEN -> CLOSING ->
    NONE through ``backend_transition``, a compare-and-set: exactly one caller wins each
    transition, so a backend session is opened and closed exactly once. Every call that
    takes a binding out (``remove``, ``expire``, ``rebind``, a displacing ``bind``) returns
    it, with its backend state, to exactly one caller.
    """
    cdef Segment seg
    cdef fi_header *hdr
    cdef fi_sessions *tab
    cdef fi_stripe *stripes
    cdef fi_session *slots
    cdef int64_t n_stripes, n_max

    # ---------------------------------------------------------------- locking
    cdef fi_stripe *_lock(self, uint64_t h) except NULL:
        if self.n_stripes == 0:
            raise ValueError("the segment has no session table (max_sessions = 0)")
        cdef fi_stripe *s = &self.stripes[h % <uint64_t>self.n_stripes]
        if _robust_lock(&s.mutex, &s.dirty):
            try:
                self._repair(s)
            except BaseException:
                pthread_mutex_unlock(&s.mutex)    # still dirty: the next locker repairs
                raise
        return s

    cdef int _repair(self, fi_stripe *s) except -1:
        """Lock held: a process died inside this stripe. Turn a half-written slot into a
        TOMB and recount the stripe's bindings."""
        cdef fi_session *slot = self._slots_of(s)
        cdef int64_t j, live = 0
        s.dirty = 1
        _maybe_fail_repair()
        for j in range(FI_SESSION_STRIPE):
            if slot[j].state == FI_SLOT_WRITING:
                slot[j].state = FI_SLOT_TOMB
            elif slot[j].state == FI_SLOT_LIVE:
                live += 1
        fi_store(&s.live, live)
        s.dirty = 0
        return 0

    cdef inline fi_session *_slots_of(self, fi_stripe *s) noexcept:
        return self.slots + (s - self.stripes) * FI_SESSION_STRIPE

    # ---------------------------------------------------------------- slots (lock held)
    cdef int64_t _find(self, fi_session *slot, uint64_t hi, uint64_t lo, uint64_t h) noexcept:
        """The slot holding this key, or -1. Probing stops at the first EMPTY slot."""
        cdef int64_t j, p, start = (h >> 32) % FI_SESSION_STRIPE
        for j in range(FI_SESSION_STRIPE):
            p = (start + j) % FI_SESSION_STRIPE
            if slot[p].state == FI_SLOT_EMPTY:
                return -1
            if slot[p].state == FI_SLOT_LIVE and slot[p].key_lo == lo and slot[p].key_hi == hi:
                return p
        return -1

    cdef int64_t _free_slot(self, fi_session *slot, uint64_t h) noexcept:
        """The first slot on the key's probe path that holds no binding, or -1 (full)."""
        cdef int64_t j, p, start = (h >> 32) % FI_SESSION_STRIPE
        for j in range(FI_SESSION_STRIPE):
            p = (start + j) % FI_SESSION_STRIPE
            if slot[p].state != FI_SLOT_LIVE:
                return p
        return -1

    cdef int64_t _victim(self, fi_session *slot, int64_t now) noexcept:
        """Full stripe: the binding to evict. Expired ones first, then the least recently
        used; ties by key (so the choice does not depend on slot order)."""
        cdef int64_t j, best = 0
        cdef bint e_j, e_best = _expired(&slot[0], now)
        for j in range(1, FI_SESSION_STRIPE):
            e_j = _expired(&slot[j], now)
            if e_j != e_best:
                if e_j:
                    best, e_best = j, e_j
                continue
            if (slot[j].last_use_ns < slot[best].last_use_ns
                    or (slot[j].last_use_ns == slot[best].last_use_ns
                        and (slot[j].key_hi < slot[best].key_hi
                             or (slot[j].key_hi == slot[best].key_hi and slot[j].key_lo < slot[best].key_lo)))):
                best = j
        return best

    cdef void _write(self, fi_session *s, uint64_t hi, uint64_t lo, int64_t deployment, int64_t replica,
                     int64_t ttl_ns, int64_t last_use, int64_t bstate, int64_t brep) noexcept:
        """Fill a slot: WRITING first, LIVE last (a crash in between leaves it for repair)."""
        fi_store(&s.state, FI_SLOT_WRITING)
        s.key_hi = hi
        s.key_lo = lo
        s.deployment = <int32_t>deployment
        s.replica = <int32_t>replica
        s.backend_state = <int32_t>bstate
        s.backend_replica = <int32_t>brep
        s.ttl_ns = ttl_ns
        s.last_use_ns = last_use
        fi_store(&s.state, FI_SLOT_LIVE)

    cdef void _vacate(self, fi_stripe *st, fi_session *slot, int64_t p) noexcept:
        """Remove the binding in slot p: a TOMB, or EMPTY when nothing probes past it."""
        fi_store(&slot[p].state, FI_SLOT_TOMB)
        fi_store(&st.live, st.live - 1)
        if slot[(p + 1) % FI_SESSION_STRIPE].state != FI_SLOT_EMPTY:
            return
        while slot[p].state == FI_SLOT_TOMB:
            fi_store(&slot[p].state, FI_SLOT_EMPTY)
            p = (p + FI_SESSION_STRIPE - 1) % FI_SESSION_STRIPE

    cdef int _check_binding(self, int64_t deployment, int64_t replica) except -1:
        if <uint64_t>deployment >= <uint64_t>self.hdr.n_deployments:
            raise IndexError("deployment index out of range")
        if <uint64_t>replica >= <uint64_t>self.seg._dep(deployment).n_replicas:
            raise IndexError("replica index out of range")
        return 0

    cdef object _place(self, fi_stripe *st, fi_session *slot, uint64_t hi, uint64_t lo, uint64_t h,
                       int64_t deployment, int64_t replica, int64_t ttl_ns, int64_t last_use,
                       int64_t bstate, int64_t brep, int64_t now):
        """Lock held, key absent: put a new binding in; returns the one it displaced, if any."""
        cdef int64_t p = self._free_slot(slot, h)
        displaced = None
        if p >= 0:
            fi_store(&st.live, st.live + 1)
        else:
            p = self._victim(slot, now)
            displaced = _info(&slot[p], now)
            if not _expired(&slot[p], now):
                fi_store(&st.evictions, st.evictions + 1)
        self._write(&slot[p], hi, lo, deployment, replica, ttl_ns, last_use, bstate, brep)
        return displaced

    # ---------------------------------------------------------------- API
    def touch(self, bytes key not None):
        """The replica ``key`` is bound to, refreshing its last use; -1 when it has no live
        binding (none, or expired)."""
        if self.seg.base == NULL:
            _closed()
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t now = _now(self.hdr), p = self._find(slot, hi, lo, h), replica = -1
        if p >= 0 and not _expired(&slot[p], now):
            slot[p].last_use_ns = now
            replica = slot[p].replica
        pthread_mutex_unlock(&st.mutex)
        return replica

    def get(self, bytes key not None):
        """The binding of ``key`` (expired or not) as a SessionInfo, or None; no touch."""
        if self.seg.base == NULL:
            _closed()
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t p = self._find(slot, hi, lo, h)
        try:
            return None if p < 0 else _info(&slot[p], _now(self.hdr))
        finally:
            pthread_mutex_unlock(&st.mutex)

    def bind(self, bytes key not None, int64_t deployment, int64_t replica, double ttl_s):
        """Bind ``key`` to ``replica`` unless it has a live binding: the first binding wins.
        Returns ``(replica, displaced)``: the replica the session goes to (the winner's), and
        the binding this call took out of the table (an expired one of the same key, or the
        stripe's least recently used when it was full) or None. Close ``displaced``'s backend
        session if it has one."""
        if self.seg.base == NULL:
            _closed()
        self._check_binding(deployment, replica)
        if not (ttl_s >= 0):
            raise ValueError("ttl_s must be >= 0")
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef int64_t ttl_ns = fi_span_ns(ttl_s)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t now = _now(self.hdr), p
        try:
            p = self._find(slot, hi, lo, h)
            if p >= 0 and not _expired(&slot[p], now):
                slot[p].last_use_ns = now
                return slot[p].replica, None
            if p >= 0:                                  # expired: the new binding takes its slot
                displaced = _info(&slot[p], now)
                self._write(&slot[p], hi, lo, deployment, replica, ttl_ns, now, FI_SESSION_NONE, -1)
                return replica, displaced
            return replica, self._place(st, slot, hi, lo, h, deployment, replica, ttl_ns, now,
                                        FI_SESSION_NONE, -1, now)
        finally:
            pthread_mutex_unlock(&st.mutex)

    def rebind(self, bytes key not None, int64_t from_replica, int64_t to_replica):
        """Re-pin a live binding from ``from_replica`` to ``to_replica`` (its replica became
        unusable). Returns ``(replica, previous)``: when the binding was on ``from_replica``,
        ``(to_replica, the binding as it was)`` -- close its backend session, now reset to
        NONE; when another caller re-pinned it first, ``(its replica, None)``; when there is
        no live binding, ``(-1, None)``."""
        if self.seg.base == NULL:
            _closed()
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t now = _now(self.hdr), p
        try:
            p = self._find(slot, hi, lo, h)
            if p < 0 or _expired(&slot[p], now):
                return -1, None
            self._check_binding(slot[p].deployment, to_replica)
            slot[p].last_use_ns = now
            if slot[p].replica != from_replica:
                return slot[p].replica, None
            previous = _info(&slot[p], now)
            slot[p].replica = <int32_t>to_replica       # then the backend state: meaningful at each step
            slot[p].backend_state = FI_SESSION_NONE
            slot[p].backend_replica = -1
            return to_replica, previous
        finally:
            pthread_mutex_unlock(&st.mutex)

    def remove(self, bytes key not None):
        """Take ``key``'s binding out (expired or not) and return it, or None."""
        if self.seg.base == NULL:
            _closed()
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t p = self._find(slot, hi, lo, h)
        try:
            if p < 0:
                return None
            info = _info(&slot[p], _now(self.hdr))
            self._vacate(st, slot, p)
            return info
        finally:
            pthread_mutex_unlock(&st.mutex)

    def backend_transition(self, bytes key not None, int64_t expect, int64_t new, int64_t replica=-1):
        """Move ``key``'s backend session from state ``expect`` to ``new`` if it is in
        ``expect`` (compare-and-set; True when this caller made the move). ``replica`` names
        the replica it is opening / open on; moving to NONE forgets it. False when the key
        has no binding."""
        if self.seg.base == NULL:
            _closed()
        if not (FI_SESSION_NONE <= expect <= FI_SESSION_CLOSING and FI_SESSION_NONE <= new <= FI_SESSION_CLOSING):
            raise ValueError("backend session states are SESSION_NONE .. SESSION_CLOSING")
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t p = self._find(slot, hi, lo, h)
        try:
            if p < 0 or slot[p].backend_state != expect:
                return False
            if replica >= 0:
                self._check_binding(slot[p].deployment, replica)
            slot[p].backend_state = <int32_t>new
            if new == FI_SESSION_NONE:
                slot[p].backend_replica = -1
            elif replica >= 0:
                slot[p].backend_replica = <int32_t>replica
            return True
        finally:
            pthread_mutex_unlock(&st.mutex)

    def expire(self, Py_ssize_t max_n=256):
        """The reaper: take out up to ``max_n`` expired bindings and return them (close the
        backend sessions among them). Scans on from where the last call stopped, visiting
        each stripe at most once per call."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t k, j, start = fi_load(&self.tab.cursor), sidx = start, now
        cdef fi_stripe *st
        cdef fi_session *slot
        out = []
        if self.n_stripes == 0:
            return out
        for k in range(self.n_stripes):
            if <Py_ssize_t>len(out) >= max_n:
                break
            sidx = (start + k) % self.n_stripes
            st = self._lock(<uint64_t>sidx)
            slot = self._slots_of(st)
            now = _now(self.hdr)
            try:
                for j in range(FI_SESSION_STRIPE):
                    if <Py_ssize_t>len(out) >= max_n:
                        break
                    if slot[j].state == FI_SLOT_LIVE and _expired(&slot[j], now):
                        out.append(_info(&slot[j], now))
                        self._vacate(st, slot, j)
                else:
                    sidx += 1                       # this stripe is done: the next call starts after it
            finally:
                pthread_mutex_unlock(&st.mutex)
        fi_store(&self.tab.cursor, sidx % self.n_stripes)
        return out

    def entries(self):
        """Every binding (expired or not), as SessionInfo: export for reload / persistence."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t i, j
        cdef fi_stripe *st
        cdef fi_session *slot
        out = []
        for i in range(self.n_stripes):
            st = self._lock(<uint64_t>i)
            slot = self._slots_of(st)
            try:
                for j in range(FI_SESSION_STRIPE):
                    if slot[j].state == FI_SLOT_LIVE:
                        out.append(_info(&slot[j], _now(self.hdr)))
            finally:
                pthread_mutex_unlock(&st.mutex)
        return out

    def restore(self, info):
        """Put back a binding exported by ``entries()`` (its idle time and backend session
        kept), replacing one of the same key. Returns what it displaced, as ``bind`` does."""
        if self.seg.base == NULL:
            _closed()
        key, deployment, replica, bstate, brep, idle_s, ttl_s = info
        self._check_binding(deployment, replica)
        if brep != -1:
            self._check_binding(deployment, brep)
        if not (FI_SESSION_NONE <= bstate <= FI_SESSION_CLOSING) or not (idle_s >= 0 and ttl_s >= 0):
            raise ValueError("not a session binding")
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t now = _now(self.hdr), p = self._find(slot, hi, lo, h)
        cdef int64_t last_use = now - fi_span_ns(idle_s)
        try:
            if p >= 0:
                displaced = _info(&slot[p], now)
                self._write(&slot[p], hi, lo, deployment, replica, fi_span_ns(ttl_s), last_use, bstate, brep)
                return displaced
            return self._place(st, slot, hi, lo, h, deployment, replica, fi_span_ns(ttl_s), last_use,
                               bstate, brep, now)
        finally:
            pthread_mutex_unlock(&st.mutex)

    @property
    def occupancy(self):
        """Bindings in the table now (expired ones not yet reaped included)."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t i, n = 0
        for i in range(self.n_stripes):
            n += fi_load(&self.stripes[i].live)
        return n

    @property
    def evictions(self):
        """Live bindings displaced because their stripe was full, since creation."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t i, n = 0
        for i in range(self.n_stripes):
            n += fi_load(&self.stripes[i].evictions)
        return n

    @property
    def capacity(self):
        """Slots in the table: 1.5 per binding of max_sessions, rounded up to whole stripes
        of 64 (a stripe evicts when its 64 are taken)."""
        return self.n_stripes * FI_SESSION_STRIPE

    @property
    def max_sessions(self):
        return self.n_max

    # ---------------------------------------------------------------- tests only
    def _debug_die_mid_bind(self, bytes key not None, int64_t deployment, int64_t replica):
        """TESTS ONLY: start binding ``key`` and stop half-way, holding the stripe's mutex
        (the caller then dies): the slot is left WRITING with half a key."""
        cdef uint64_t hi, lo, h
        _unpack_key(key, &hi, &lo)
        h = _session_hash(hi, lo)
        cdef fi_stripe *st = self._lock(h)
        cdef fi_session *slot = self._slots_of(st)
        cdef int64_t p = self._free_slot(slot, h)
        if p < 0:
            p = self._victim(slot, _now(self.hdr))
        fi_store(&slot[p].state, FI_SLOT_WRITING)
        slot[p].key_hi = hi
        slot[p].replica = <int32_t>replica

    def _debug_check(self):
        """TESTS ONLY: every invariant of the table, as a list of what is wrong (empty: fine).
        Takes every stripe's lock (repairing what a dead process left)."""
        cdef int64_t i, j, live
        cdef fi_stripe *st
        cdef fi_session *slot
        problems = []
        seen = set()
        for i in range(self.n_stripes):
            st = self._lock(<uint64_t>i)
            slot = self._slots_of(st)
            try:
                live = 0
                for j in range(FI_SESSION_STRIPE):
                    if slot[j].state == FI_SLOT_WRITING:
                        problems.append(f"stripe {i} slot {j} left WRITING")
                    if slot[j].state != FI_SLOT_LIVE:
                        continue
                    live += 1
                    k = (slot[j].key_hi, slot[j].key_lo)
                    if k in seen:
                        problems.append(f"key {k} bound twice")
                    seen.add(k)
                    if _session_hash(slot[j].key_hi, slot[j].key_lo) % <uint64_t>self.n_stripes != <uint64_t>i:
                        problems.append(f"key {k} in the wrong stripe")
                    elif self._find(slot, slot[j].key_hi, slot[j].key_lo,
                                    _session_hash(slot[j].key_hi, slot[j].key_lo)) != j:
                        problems.append(f"key {k} not found where it is (stripe {i} slot {j})")
                    if not (0 <= slot[j].replica < FI_MAX_REPLICAS):
                        problems.append(f"key {k} bound to replica {slot[j].replica}")
                if live != st.live:
                    problems.append(f"stripe {i} counts {st.live} bindings, holds {live}")
            finally:
                pthread_mutex_unlock(&st.mutex)
        return problems


cdef SessionTable _bind_sessions(Segment seg):
    cdef fi_header *h = seg.hdr
    cdef SessionTable t = SessionTable.__new__(SessionTable)
    t.seg = seg
    t.hdr = h
    t.tab = <fi_sessions *>(seg.base + h.off_sessions_hdr)
    t.stripes = <fi_stripe *>(seg.base + h.off_stripes)
    t.slots = <fi_session *>(seg.base + h.off_sessions)
    t.n_stripes = h.n_stripes
    t.n_max = h.max_sessions
    return t


cdef int _init_sessions(Segment seg) except -1:
    cdef fi_header *h = seg.hdr
    cdef int64_t i
    cdef int rc
    for i in range(h.n_stripes):
        rc = fi_mutex_init(&(<fi_stripe *>(seg.base + h.off_stripes) + i).mutex)
        if rc:
            raise OSError(rc, "pthread_mutex_init (process-shared, robust): " + os.strerror(rc))
    return 0
