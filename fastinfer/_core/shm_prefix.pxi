# Prefix index (included by shm.pyx): block-chain hash -> replicas that recently
# served it, per deployment, for prefix-affinity routing (issue 9).
#
# A set-associative table: a hash maps to one set of FI_PREFIX_WAYS (8) entries;
# a new hash takes an empty entry of its set or the least recently used one.
# Entries are read without a lock under a sequence word (atomics.h rule 6): a
# reader keeps an entry's mask only when the sequence word was even and
# unchanged around reading its hash and mask, so it never reports a replica that
# was not inserted for that hash. Writers lock one entry at a time by CASing the
# sequence word odd (naming themselves, for reclaim) and skip an entry another
# writer holds: the index is advisory, a lost update is fine, a wrong read is not.

cdef inline int64_t _seq_locked(int64_t seq, int64_t worker) noexcept:
    return seq | FI_SEQ_LOCKED | ((worker + 1) << FI_SEQ_OWNER_SHIFT)


cdef inline int64_t _seq_next(int64_t seq) noexcept:
    return ((seq >> FI_SEQ_SHIFT) + 1) << FI_SEQ_SHIFT


cdef inline bint _seq_lock(fi_prefix *e, int64_t worker, int64_t *held) noexcept:
    """Lock entry e for worker; False when another writer holds it."""
    cdef int64_t v = fi_load(&e.seq)
    if v & FI_SEQ_LOCKED:
        return False
    if not fi_cas(&e.seq, &v, _seq_locked(v, worker)):
        return False
    held[0] = v
    return True


cdef inline uint64_t _read_mask(fi_prefix *e, int64_t h) noexcept:
    """The entry's replica mask if it holds hash h (consistently read), else 0."""
    cdef int64_t v1 = fi_load(&e.seq), eh, em
    if v1 & FI_SEQ_LOCKED:
        return 0
    eh = fi_load(&e.hash)
    em = fi_load(&e.mask)
    if fi_load(&e.seq) != v1 or eh != h:
        return 0
    return <uint64_t>em


cdef object _as_hashes(object hashes):
    """numpy uint64 arrays and other 'Q' buffers as they are; bytes-likes viewed as uint64."""
    if isinstance(hashes, (bytes, bytearray)):
        if len(hashes) % 8:
            raise ValueError("a hash buffer holds whole uint64 values (a multiple of 8 bytes)")
        return memoryview(hashes).cast("Q")
    return hashes


cdef int64_t _reclaim_prefix(Segment seg, int64_t worker):
    """Entries a dead worker held locked: emptied and unlocked."""
    cdef fi_header *h = seg.hdr
    cdef fi_prefix *e = <fi_prefix *>(seg.base + h.off_prefix)
    cdef int64_t i, v, n = 0
    for i in range(h.prefix_total):
        v = fi_load(&e[i].seq)
        if (v & FI_SEQ_LOCKED) and ((v >> FI_SEQ_OWNER_SHIFT) & FI_LEASE_MASK) == worker + 1:
            fi_store(&e[i].mask, 0)
            fi_store(&e[i].hash, 0)
            fi_store(&e[i].last_use_ns, 0)
            fi_store(&e[i].seq, _seq_next(v))
            n += 1
    return n


cdef class PrefixIndex:
    """Which replicas of one deployment recently served which prompt prefixes.

    Hashes are uint64, one per prompt block, computed by the caller cumulatively (block i's
    hash covers blocks 0..i), so a hash names a whole prefix. Bounded: ``capacity`` entries
    (``nbytes`` of shared memory); a full set evicts its least recently used entry. Advisory:
    a concurrent update may be lost, but ``match`` never reports a replica that was not
    inserted for a hash. Replica sets are 64-bit masks (at most 64 replicas).
    """
    cdef Segment seg
    cdef fi_header *hdr
    cdef fi_prefix *e
    cdef int64_t n_sets, n, n_workers
    cdef uint64_t all_mask

    cdef inline fi_prefix *_set(self, uint64_t h) noexcept:
        return self.e + (fi_mix64(h) % <uint64_t>self.n_sets) * FI_PREFIX_WAYS

    cdef uint64_t _lookup(self, uint64_t h) noexcept:
        cdef fi_prefix *s = self._set(h)
        cdef uint64_t m = 0
        cdef int64_t w
        for w in range(FI_PREFIX_WAYS):
            m |= _read_mask(&s[w], <int64_t>h)
        return m

    def match(self, hashes):
        """For each replica, how many leading blocks of ``hashes`` (a numpy uint64 array, or
        bytes of native uint64s) it holds: a list of ``n_replicas`` ints."""
        if self.seg.base == NULL:
            _closed()
        cdef const uint64_t[:] hs = _as_hashes(hashes)
        cdef Py_ssize_t i, count = hs.shape[0]
        cdef uint64_t alive = self.all_mask, now_mask, dropped
        depth = [0] * self.n
        if self.n_sets == 0:
            return depth
        for i in range(count):
            now_mask = alive & self._lookup(hs[i])
            dropped = alive & ~now_mask
            while dropped:
                depth[fi_ctz(dropped)] = i
                dropped &= dropped - 1
            alive = now_mask
            if alive == 0:
                return depth
        while alive:
            depth[fi_ctz(alive)] = count
            alive &= alive - 1
        return depth

    def insert(self, int64_t worker, hashes, int64_t replica):
        """Record that ``replica`` served (and so caches) every prefix in ``hashes``."""
        _enter(self.seg, worker, self.n_workers)
        if <uint64_t>replica >= <uint64_t>self.n:
            raise IndexError("replica index out of range")
        cdef const uint64_t[:] hs = _as_hashes(hashes)
        cdef Py_ssize_t i
        if self.n_sets == 0:
            return
        cdef int64_t now = _now(self.hdr), bit = <int64_t>(<uint64_t>1 << replica)
        for i in range(hs.shape[0]):
            self._insert_one(<int64_t>hs[i], bit, worker, now)

    cdef void _insert_one(self, int64_t h, int64_t bit, int64_t worker, int64_t now) noexcept:
        cdef fi_prefix *s = self._set(<uint64_t>h)
        cdef int64_t w, victim = -1, v
        for w in range(FI_PREFIX_WAYS):
            if _read_mask(&s[w], h) != 0:          # known: add the replica, refresh
                if _seq_lock(&s[w], worker, &v):
                    if fi_load(&s[w].hash) == h and fi_load(&s[w].mask) != 0:
                        fi_store(&s[w].mask, fi_load(&s[w].mask) | bit)
                        fi_store(&s[w].last_use_ns, now)
                    fi_store(&s[w].seq, _seq_next(v))
                return
        for w in range(FI_PREFIX_WAYS):            # new: an empty entry, else the least recently used
            if fi_load(&s[w].mask) == 0:
                victim = w
                break
            if victim < 0 or fi_load(&s[w].last_use_ns) < fi_load(&s[victim].last_use_ns):
                victim = w
        if _seq_lock(&s[victim], worker, &v):
            fi_store(&s[victim].mask, 0)           # (readers skip it while locked anyway)
            fi_store(&s[victim].hash, h)
            fi_store(&s[victim].last_use_ns, now)
            fi_store(&s[victim].mask, bit)
            fi_store(&s[victim].seq, _seq_next(v))

    def forget_replica(self, int64_t worker, int64_t replica):
        """Drop ``replica`` from every entry (it restarted with an empty cache, or left);
        entries left with no replica become empty. Returns how many entries it touched."""
        _enter(self.seg, worker, self.n_workers)
        if <uint64_t>replica >= <uint64_t>self.n:
            raise IndexError("replica index out of range")
        cdef int64_t i, v, m, bit = <int64_t>(<uint64_t>1 << replica), n = 0
        for i in range(self.n_sets * FI_PREFIX_WAYS):
            if not (fi_load(&self.e[i].mask) & bit):
                continue
            for _ in range(1000):                  # held for a few stores only ...
                if _seq_lock(&self.e[i], worker, &v):
                    break
            else:
                continue                           # ... or by a dead writer, until reclaimed
            m = fi_load(&self.e[i].mask) & ~bit
            fi_store(&self.e[i].mask, m)
            if m == 0:
                fi_store(&self.e[i].hash, 0)
            fi_store(&self.e[i].seq, _seq_next(v))
            n += 1
        return n

    def entries(self):
        """(hash, mask, idle_s) of every entry in use: export for reload."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t i, now = _now(self.hdr), v, h, m, t
        out = []
        for i in range(self.n_sets * FI_PREFIX_WAYS):
            v = fi_load(&self.e[i].seq)
            h = fi_load(&self.e[i].hash)
            m = fi_load(&self.e[i].mask)
            t = fi_load(&self.e[i].last_use_ns)
            if m != 0 and not (v & FI_SEQ_LOCKED) and fi_load(&self.e[i].seq) == v:
                out.append((<uint64_t>h, <uint64_t>m, (now - t) / 1e9))
        return out

    def restore(self, int64_t worker, uint64_t hash, uint64_t mask, double idle_s):
        """Put back an entry from ``entries()`` (replica bits already mapped to this
        deployment's replicas) as if inserted ``idle_s`` ago."""
        _enter(self.seg, worker, self.n_workers)
        mask &= self.all_mask
        if self.n_sets == 0 or mask == 0:
            return
        cdef int64_t then = _now(self.hdr) - fi_span_ns(idle_s)
        cdef uint64_t bits = mask
        while bits:
            self._insert_one(<int64_t>hash, <int64_t>(bits & (~bits + 1)), worker, then)
            bits &= bits - 1

    @property
    def occupancy(self):
        """Entries in use (a scan: for metrics, not the request path)."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t i, n = 0
        for i in range(self.n_sets * FI_PREFIX_WAYS):
            n += fi_load_relaxed(&self.e[i].mask) != 0
        return n

    @property
    def capacity(self):
        """Entries: the Layout's prefix_capacity rounded up to whole sets of 8."""
        return self.n_sets * FI_PREFIX_WAYS

    @property
    def nbytes(self):
        """Shared memory the index takes."""
        return self.n_sets * FI_PREFIX_WAYS * sizeof(fi_prefix)

    @property
    def n_replicas(self):
        return self.n

    def _debug_lock_entry(self, int64_t worker, uint64_t hash):
        """TESTS ONLY: lock the entry holding ``hash`` (or its set's first) and keep it locked,
        as a writer that dies mid-update would."""
        cdef fi_prefix *s = self._set(hash)
        cdef int64_t w, v
        for w in range(FI_PREFIX_WAYS):
            if _read_mask(&s[w], <int64_t>hash) != 0:
                break
        else:
            w = 0
        return _seq_lock(&s[w], worker, &v)


cdef PrefixIndex _bind_prefix(Segment seg, int64_t d):
    cdef fi_deployment *dep = seg._dep(d)
    cdef PrefixIndex p = PrefixIndex.__new__(PrefixIndex)
    p.seg = seg
    p.hdr = seg.hdr
    p.e = <fi_prefix *>(seg.base + dep.off_prefix)
    p.n_sets = dep.prefix_sets
    p.n = dep.n_replicas
    p.all_mask = <uint64_t>-1 if p.n == 64 else ((<uint64_t>1 << p.n) - 1)
    p.n_workers = seg.hdr.n_workers
    return p
