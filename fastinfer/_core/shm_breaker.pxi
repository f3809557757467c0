# Breaker: the circuit of one (deployment, replica) (included by shm.pyx).
#
# One state word, (open_until_ns << FI_BRK_BITS) | FI_BRK_OPEN, or 0 when
# closed; half-open is "open and due" (derived from the clock), so the closed
# check is a single atomic load. Probes are counted in `probes` and per worker
# in the probe-owner array (for reclaim). Configuration is written once, from
# the Layout, when the segment is created; `configure` exists for operators and
# tests, and keeps the open time a failing replica has grown to.

cdef inline int64_t _brk_word(int64_t until) noexcept:
    """The state word of a circuit open until ``until`` (clamped to what the word holds)."""
    return (min(until, FI_BRK_MAX_UNTIL) << FI_BRK_BITS) | FI_BRK_OPEN


cdef inline int64_t _brk_until(int64_t word) noexcept:
    return word >> FI_BRK_BITS


cdef inline bint _brk_is_open(int64_t word) noexcept:
    return (word & FI_BRK_MASK) != 0


cdef void _init_breaker(fi_breaker *b, fi_deployment *dep) noexcept:
    b.word = 0
    b.threshold = dep.brk_threshold
    b.open_ns = fi_span_ns(dep.brk_open_s)
    b.max_open_ns = fi_span_ns(dep.brk_max_open_s)
    b.max_probes = dep.brk_probes
    b.cur_open_ns = b.open_ns


cdef Breaker _bind_breaker(Segment seg, int64_t index):
    cdef fi_header *h = seg.hdr
    cdef Breaker brk = Breaker.__new__(Breaker)
    brk.seg = seg
    brk.hdr = h
    brk.b = <fi_breaker *>(seg.base + h.off_breakers) + index
    brk.owner = <int64_t *>(seg.base + h.off_probe_owner) + index
    brk.n_breakers = h.n_breakers
    brk.n_workers = h.n_workers
    return brk


cdef int64_t _reclaim_probes(Segment seg, int64_t worker):
    """Give back the half-open probes ``worker`` held, on every breaker."""
    cdef fi_header *h = seg.hdr
    cdef int64_t *owner = <int64_t *>(seg.base + h.off_probe_owner) + worker * h.n_breakers
    cdef int64_t i, n, probes = 0
    for i in range(h.n_breakers):
        n = fi_xchg(&owner[i], 0)
        if n:
            fi_fetch_add(&(<fi_breaker *>(seg.base + h.off_breakers) + i).probes, -n)
            probes += n
    return probes


cdef class Breaker:
    """Circuit breaker of one (deployment, replica); atomics only."""
    cdef Segment seg
    cdef fi_header *hdr
    cdef fi_breaker *b
    cdef int64_t *owner          # probe owner of worker w: owner[w * n_breakers]
    cdef int64_t n_breakers, n_workers

    def configure(self, int64_t failure_threshold, double open_s, double max_open_s,
                  int64_t half_open_probes):
        """Change the configuration the segment was created with (operators, tests).
        The open time a failing replica has grown to is kept, within the new bounds."""
        if self.seg.base == NULL:
            _closed()
        if failure_threshold < 1 or half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be >= 1")
        if not (0 <= open_s <= max_open_s) or not isfinite(max_open_s):
            raise ValueError("need 0 <= open_s <= max_open_s (finite)")
        cdef int64_t open_ns = fi_span_ns(open_s), max_open_ns = fi_span_ns(max_open_s)
        cdef int64_t cur = fi_load(&self.b.cur_open_ns)
        fi_store(&self.b.threshold, failure_threshold)
        fi_store(&self.b.open_ns, open_ns)
        fi_store(&self.b.max_open_ns, max_open_ns)
        fi_store(&self.b.max_probes, half_open_probes)
        fi_store(&self.b.cur_open_ns, min(max(cur, open_ns), max_open_ns))

    @property
    def config(self):
        """(failure_threshold, open_s, max_open_s, half_open_probes) in force."""
        if self.seg.base == NULL:
            _closed()
        return (fi_load(&self.b.threshold), fi_load(&self.b.open_ns) / 1e9,
                fi_load(&self.b.max_open_ns) / 1e9, fi_load(&self.b.max_probes))

    cdef inline void _mark_half(self, int64_t until) noexcept:
        cdef int64_t m = fi_load(&self.b.half_marker)
        while m != until:
            if fi_cas(&self.b.half_marker, &m, until):
                fi_fetch_add(&self.b.trans[2], 1)
                return

    cpdef check(self, int64_t worker):
        """ALLOWED (closed), REJECTED (open), or PROBE: allowed as a half-open probe,
        whose verdict the caller must report (record_* with probe=True, or release_probe)."""
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w = fi_load(&self.b.word)
        if not _brk_is_open(w):
            return FI_ALLOWED
        return self._check_open(w, worker)

    cdef int _check_open(self, int64_t w, int64_t worker) noexcept:
        cdef int64_t until = _brk_until(w), p, maxp
        if _now(self.hdr) < until:
            return FI_REJECTED
        self._mark_half(until)
        p = fi_load(&self.b.probes)
        maxp = fi_load(&self.b.max_probes)
        while True:
            if p >= maxp:
                return FI_REJECTED
            if fi_cas(&self.b.probes, &p, p + 1):
                break
        fi_fetch_add(&self.owner[worker * self.n_breakers], 1)
        return FI_PROBE

    cdef void _drop_probe(self, int64_t worker) noexcept:
        cdef int64_t *o = &self.owner[worker * self.n_breakers]
        cdef int64_t n = fi_load(o)
        while n > 0:
            if fi_cas(o, &n, n - 1):
                fi_fetch_add(&self.b.probes, -1)
                return

    cpdef record_success(self, int64_t worker, bint probe=False):
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w
        if not probe:
            w = fi_load(&self.b.word)
            if not _brk_is_open(w) and fi_load_relaxed(&self.b.failures) != 0:
                fi_store(&self.b.failures, 0)
            return
        self._drop_probe(worker)
        w = fi_load(&self.b.word)
        if _brk_is_open(w) and _now(self.hdr) >= _brk_until(w):
            if fi_cas(&self.b.word, &w, 0):
                fi_store(&self.b.failures, 0)
                fi_store(&self.b.cur_open_ns, fi_load(&self.b.open_ns))
                fi_fetch_add(&self.b.trans[0], 1)

    cpdef record_failure(self, int64_t worker, bint probe=False):
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w, n, now, open_ns, new
        if not probe:
            w = fi_load(&self.b.word)
            if _brk_is_open(w):
                return
            n = fi_fetch_add(&self.b.failures, 1) + 1
            if n >= fi_load(&self.b.threshold):
                open_ns = fi_load(&self.b.open_ns)
                fi_store(&self.b.cur_open_ns, open_ns)
                now = _now(self.hdr)
                if fi_cas(&self.b.word, &w, _brk_word(now + open_ns)):
                    fi_fetch_add(&self.b.trans[1], 1)
            return
        self._drop_probe(worker)
        w = fi_load(&self.b.word)
        now = _now(self.hdr)
        if _brk_is_open(w) and now >= _brk_until(w):
            new = min(fi_load(&self.b.cur_open_ns) * 2, fi_load(&self.b.max_open_ns))
            if fi_cas(&self.b.word, &w, _brk_word(now + new)):
                fi_store(&self.b.cur_open_ns, new)
                fi_fetch_add(&self.b.trans[1], 1)

    cpdef release_probe(self, int64_t worker):
        """A probe ended without a verdict (client left): give it back."""
        _enter(self.seg, worker, self.n_workers)
        self._drop_probe(worker)

    def force_open(self, double duration_s):
        """Open for ``duration_s`` (clamped to ~36 years; inf means that long)."""
        if self.seg.base == NULL:
            _closed()
        if not (duration_s >= 0):
            raise ValueError("duration_s must be >= 0")
        cdef int64_t now = _now(self.hdr)
        cdef int64_t old = fi_xchg(&self.b.word, _brk_word(now + fi_span_ns(duration_s)))
        if not (_brk_is_open(old) and now < _brk_until(old)):
            fi_fetch_add(&self.b.trans[1], 1)

    def reset(self):
        if self.seg.base == NULL:
            _closed()
        cdef int64_t old = fi_xchg(&self.b.word, 0)
        fi_store(&self.b.failures, 0)
        fi_store(&self.b.cur_open_ns, fi_load(&self.b.open_ns))
        if _brk_is_open(old):
            fi_fetch_add(&self.b.trans[0], 1)

    @property
    def state(self):
        """CLOSED, OPEN or HALF_OPEN (open, and due for a probe)."""
        return self._state()

    cdef int _state(self) except -1:
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.b.word)
        if not _brk_is_open(w):
            return FI_CLOSED
        if _now(self.hdr) < _brk_until(w):
            return FI_OPEN
        self._mark_half(_brk_until(w))
        return FI_HALF_OPEN

    @property
    def retry_after_s(self):
        return self._retry_after_s()

    cdef double _retry_after_s(self) except -1.0:
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.b.word), left
        if not _brk_is_open(w):
            return 0.0
        left = _brk_until(w) - _now(self.hdr)
        return left / 1e9 if left > 0 else 0.0

    def export(self):
        """The breaker's state as a BreakerState, to carry it into a new segment (reload)."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.b.word), left = 0
        state = FI_CLOSED
        if _brk_is_open(w):
            left = max(_brk_until(w) - _now(self.hdr), 0)
            state = FI_OPEN if left > 0 else FI_HALF_OPEN
        return BreakerState(state, left / 1e9, fi_load(&self.b.cur_open_ns) / 1e9, fi_load(&self.b.failures))

    def restore(self, state):
        """Take on an exported BreakerState (open for what it had left, or half-open). The
        grown open time is kept within this breaker's configured bounds; probes in flight are
        not carried (their verdicts go to the segment they were taken from)."""
        if self.seg.base == NULL:
            _closed()
        kind, open_left_s, cur_open_s, failures = state
        if kind not in (FI_CLOSED, FI_OPEN, FI_HALF_OPEN) or not (open_left_s >= 0) or not (cur_open_s >= 0):
            raise ValueError("not a breaker state")
        fi_store(&self.b.failures, max(<int64_t>failures, 0))
        fi_store(&self.b.cur_open_ns, min(max(fi_span_ns(cur_open_s), fi_load(&self.b.open_ns)),
                                          fi_load(&self.b.max_open_ns)))
        if kind == FI_CLOSED:
            fi_store(&self.b.word, 0)
        else:
            fi_store(&self.b.word, _brk_word(_now(self.hdr) + fi_span_ns(open_left_s)))

    @property
    def transitions(self):
        """(into closed, into open, into half-open) since the segment was created."""
        if self.seg.base == NULL:
            _closed()
        return (fi_load(&self.b.trans[0]), fi_load(&self.b.trans[1]), fi_load(&self.b.trans[2]))

    @property
    def consecutive_failures(self):
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.b.failures)

    @property
    def probes_in_flight(self):
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.b.probes)


cdef class BreakerSet:
    """A deployment's replica breakers as one worker asks and tells them (``Segment.breaker_set``):
    what the engine asks on every request, one compiled call each (``breaker.deployment_breakers``)."""

    cdef readonly list breakers
    cdef readonly int64_t worker

    def __init__(self, breakers, int64_t worker):
        self.breakers = [<Breaker?>b for b in breakers]
        self.worker = worker

    cdef Breaker _of(self, Py_ssize_t replica):
        if <size_t>replica >= <size_t>len(self.breakers):
            raise IndexError("replica index out of range")
        return <Breaker>self.breakers[replica]

    def check(self, Py_ssize_t replica):
        """ALLOWED, REJECTED, or PROBE (a half-open trial the caller must report)."""
        return self._of(replica).check(self.worker)

    def record(self, Py_ssize_t replica, bint probe, failed):
        """An attempt's verdict: True counted failure, False success, None no verdict (429, client gone)."""
        cdef Breaker b = self._of(replica)
        if failed is None:
            if probe:
                b.release_probe(self.worker)
        elif failed:
            b.record_failure(self.worker, probe)
        else:
            b.record_success(self.worker, probe)

    def all_open(self):
        """Every replica's circuit is open (and not yet due for a probe)."""
        for b in self.breakers:
            if (<Breaker>b)._state() != FI_OPEN:
                return False
        return True

    def retry_after_s(self):
        """Seconds until the first open replica admits a probe again (0 with none open)."""
        cdef double least = -1.0, wait
        for b in self.breakers:
            if (<Breaker>b)._state() != FI_CLOSED:
                wait = (<Breaker>b)._retry_after_s()
                if least < 0 or wait < least:
                    least = wait
        return least if least >= 0 else 0.0
