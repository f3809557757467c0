# Replica load (included by shm.pyx): the host's view of each replica, so every
# worker routes with it (issue 9: 9 requests over 3 replicas from 2 workers land
# 3/3/3, not 2/4/3).
#
# Per (deployment, replica): in_flight (host-wide), a latency EWMA and the
# configured weight; per deployment: a round-robin counter (one fetch_add per
# pick) and the unhealthy mask set by the health prober. pick_and_start chooses
# and counts in one step: it CASes the chosen replica's in_flight from the
# value it decided on, and decides again when another process changed it
# first, so concurrent picks spread exactly. Owner-tracked per worker.

cdef inline bint _lighter(int64_t v_a, int64_t w_a, int64_t v_b, int64_t w_b) noexcept:
    """in_flight/weight of a < that of b (exact, no division)."""
    return v_a * w_b < v_b * w_a


cdef inline double _latency_cost(int64_t ewma_ns, int64_t v, int64_t w) noexcept:
    """What a request would wait on a replica, as peak-EWMA balancers (Finagle, Linkerd) weigh
    it: its answer-time average times the requests it would then hold (÷ weight), so load spreads
    in proportion to speed instead of every request going to the fastest until its average moves.
    A replica with no sample yet costs nothing while idle (it is tried) and everything while its
    first request is out (one request finds out how fast it is, not a burst)."""
    if ewma_ns == 0:
        return 0.0 if v == 0 else INFINITY
    return <double>ewma_ns * <double>(v + 1) / <double>w


cdef inline int64_t _nth_bit(uint64_t mask, int64_t n) noexcept:
    """Index of the n-th (from 0) set bit of mask."""
    while n > 0:
        mask &= mask - 1
        n -= 1
    return fi_ctz(mask)


cdef int64_t _reclaim_replica_load(Segment seg, int64_t worker):
    cdef fi_header *h = seg.hdr
    cdef int64_t *held = <int64_t *>(seg.base + h.off_replica_held) + worker * h.replica_stride
    cdef int64_t i, n, total = 0
    for i in range(h.n_breakers):
        n = fi_xchg(&held[i], 0)
        if n:
            fi_fetch_add(&(<fi_replica *>(seg.base + h.off_replicas) + i).in_flight, -n)
            total += n
    return total


cdef ReplicaLoad _bind_replica_load(Segment seg, int64_t d):
    cdef fi_header *h = seg.hdr
    cdef ReplicaLoad rl = ReplicaLoad.__new__(ReplicaLoad)
    rl.seg = seg
    rl.dep = seg._dep(d)
    rl.reps = <fi_replica *>(seg.base + h.off_replicas) + rl.dep.replica_base
    rl.held = <int64_t *>(seg.base + h.off_replica_held) + rl.dep.replica_base
    rl.stride = h.replica_stride
    rl.n = rl.dep.n_replicas
    rl.all_mask = <uint64_t>-1 if rl.n == 64 else ((<uint64_t>1 << rl.n) - 1)
    rl.n_workers = h.n_workers
    return rl


cdef class ReplicaLoad:
    """The load of one deployment's replicas as the whole host sees it.

    Replica sets are bit masks (bit i = replica i), hence at most 64 replicas per
    deployment. ``pick_and_start`` never picks an avoided or unhealthy replica.
    Every ``start`` (or successful pick) must be matched by one ``finish`` of the same
    worker; a dead worker's are given back by ``Segment.reclaim_worker``.
    """
    cdef Segment seg
    cdef fi_deployment *dep
    cdef fi_replica *reps
    cdef int64_t *held          # held[worker * stride + replica]
    cdef int64_t stride, n, n_workers
    cdef uint64_t all_mask

    cdef inline int _count(self, int64_t worker, int64_t i) except -1:
        fi_fetch_add(&self.held[worker * self.stride + i], 1)
        return i

    cdef int64_t _least_loaded(self, uint64_t allowed, int64_t start, bint by_latency) noexcept:
        """Decide on the cheapest allowed replica (``by_latency``: ``_latency_cost``, else 0 for
        all) and among equals the lightest (ties: the first from ``start`` on); count it with a
        CAS from the value decided on; decide again if it changed."""
        cdef int64_t k, i, best, v, v_best
        cdef double c, c_best
        while True:
            best = -1
            v_best = 0
            c_best = 0.0
            for k in range(self.n):
                i = (start + k) % self.n
                if not (allowed >> i) & 1:
                    continue
                v = fi_load(&self.reps[i].in_flight)
                c = _latency_cost(fi_load_relaxed(&self.reps[i].ewma_ns), v, self.reps[i].weight) if by_latency else 0.0
                if (best < 0 or c < c_best
                        or (c == c_best and _lighter(v, self.reps[i].weight, v_best, self.reps[best].weight))):
                    best, v_best, c_best = i, v, c
            if fi_cas(&self.reps[best].in_flight, &v_best, v_best + 1):
                return best

    cdef int64_t _two_choices(self, uint64_t allowed, uint64_t rand) noexcept:
        cdef int64_t m = fi_popcount(allowed), a, b, pick, v_a, v_b, v
        if m == 1:
            a = b = fi_ctz(allowed)
        else:
            a = rand % m
            b = (rand // m) % (m - 1)
            if b >= a:
                b += 1
            a = _nth_bit(allowed, a)
            b = _nth_bit(allowed, b)
        while True:
            v_a = fi_load(&self.reps[a].in_flight)
            v_b = fi_load(&self.reps[b].in_flight)
            if _lighter(v_b, self.reps[b].weight, v_a, self.reps[a].weight):
                pick, v = b, v_b
            else:
                pick, v = a, v_a
            if fi_cas(&self.reps[pick].in_flight, &v, v + 1):
                return pick

    cdef int64_t _weighted_round_robin(self, uint64_t allowed, uint64_t turn) noexcept:
        cdef int64_t i, total = 0, point
        for i in range(self.n):
            if (allowed >> i) & 1:
                total += self.reps[i].weight
        point = turn % total
        for i in range(self.n):
            if (allowed >> i) & 1:
                point -= self.reps[i].weight
                if point < 0:
                    break
        fi_fetch_add(&self.reps[i].in_flight, 1)
        return i

    def pick_and_start(self, int64_t worker, int64_t policy, uint64_t avoid_mask=0, uint64_t rand=0):
        """Choose a replica by ``policy`` (ROUND_ROBIN weighted, LEAST_LOADED,
        POWER_OF_TWO with ``rand`` choosing the two, LATENCY) among those not in
        ``avoid_mask`` and not unhealthy, and count the request on it: returns its index,
        or NO_REPLICA (-1) when none is left. Ties go round-robin host-wide."""
        _enter(self.seg, worker, self.n_workers)
        cdef uint64_t allowed = self.all_mask & ~avoid_mask & ~(<uint64_t>fi_load(&self.dep.unhealthy))
        cdef uint64_t turn
        if policy < FI_ROUND_ROBIN or policy > FI_LATENCY:
            raise ValueError(f"unknown routing policy {policy}")
        if allowed == 0:
            return FI_NO_REPLICA
        turn = <uint64_t>fi_fetch_add(&self.dep.rr, 1)
        if policy == FI_ROUND_ROBIN:
            return self._count(worker, self._weighted_round_robin(allowed, turn))
        if policy == FI_POWER_OF_TWO:
            return self._count(worker, self._two_choices(allowed, rand))
        return self._count(worker, self._least_loaded(allowed, turn % self.n, policy == FI_LATENCY))

    def start(self, int64_t worker, int64_t replica):
        """Count a request on ``replica`` chosen some other way (a sticky session, a prefix match)."""
        self._check(worker, replica)
        fi_fetch_add(&self.reps[replica].in_flight, 1)
        self._count(worker, replica)

    def finish(self, int64_t worker, int64_t replica, double latency_s=-1.0):
        """The request ``worker`` started on ``replica`` has ended; ``latency_s`` >= 0 feeds
        the replica's latency EWMA (none for failures that say nothing about its speed)."""
        self._check(worker, replica)
        cdef int64_t *h = &self.held[worker * self.stride + replica]
        cdef int64_t n = fi_load(h), old, x, new
        while True:
            if n <= 0:
                raise RuntimeError(f"worker {worker} has no request on replica {replica}")
            if fi_cas(h, &n, n - 1):
                break
        fi_fetch_add(&self.reps[replica].in_flight, -1)
        if latency_s >= 0:
            x = max(fi_span_ns(latency_s), 1)          # 0 means "no sample yet"
            old = fi_load(&self.reps[replica].ewma_ns)
            while True:
                new = x if old == 0 else max(<int64_t>(old + FI_EWMA_ALPHA * (x - old) + 0.5), 1)
                if fi_cas(&self.reps[replica].ewma_ns, &old, new):
                    break

    def set_healthy(self, int64_t replica, bint healthy):
        """The health prober's verdict; returns the previous one (log changes only)."""
        self._check(0, replica)
        cdef int64_t bit = <int64_t>(<uint64_t>1 << replica), prev
        if healthy:
            prev = fi_fetch_and(&self.dep.unhealthy, ~bit)
        else:
            prev = fi_fetch_or(&self.dep.unhealthy, bit)
        return (prev & bit) == 0

    def healthy(self, int64_t replica):
        self._check(0, replica)
        return (fi_load(&self.dep.unhealthy) >> replica) & 1 == 0

    @property
    def healthy_mask(self):
        """Bit i set: replica i is healthy."""
        if self.seg.base == NULL:
            _closed()
        return self.all_mask & ~(<uint64_t>fi_load(&self.dep.unhealthy))

    def in_flight(self, int64_t replica):
        self._check(0, replica)
        return fi_load(&self.reps[replica].in_flight)

    def latency_s(self, int64_t replica):
        """The replica's latency EWMA in seconds (0.0 before its first sample)."""
        self._check(0, replica)
        return fi_load(&self.reps[replica].ewma_ns) / 1e9

    def weight(self, int64_t replica):
        self._check(0, replica)
        return self.reps[replica].weight

    def held_by(self, int64_t worker, int64_t replica):
        self._check(worker, replica)
        return fi_load(&self.held[worker * self.stride + replica])

    @property
    def n_replicas(self):
        return self.n

    cdef int _check(self, int64_t worker, int64_t replica) except -1:
        _enter(self.seg, worker, self.n_workers)
        if <uint64_t>replica >= <uint64_t>self.n:
            raise IndexError("replica index out of range")
        return 0
