# Counters and Histograms: the metrics of the whole host (included by shm.pyx).
# One atomic add per observation; snapshots read with relaxed loads (rule 3).

cdef array.array _INT64_ARRAY = array.array("q")   # the template ``Counters.snapshot`` clones


cdef Counters _bind_counters(Segment seg):
    cdef Counters c = Counters.__new__(Counters)
    c.seg = seg
    c.v = <int64_t *>(seg.base + seg.hdr.off_counters)
    c.n = seg.hdr.n_counters
    return c


cdef Histograms _bind_histograms(Segment seg, bounds):
    cdef Histograms hs = Histograms.__new__(Histograms)
    hs.seg = seg
    hs.base = seg.base + seg.hdr.off_hist
    hs.stride = seg.hdr.hist_stride
    hs.bounds = <double *>(seg.base + seg.hdr.off_bounds)
    hs.nb = seg.hdr.n_buckets
    hs.n = seg.hdr.n_histograms
    hs.bucket_bounds = list(bounds)
    return hs


cdef class Counters:
    """``n`` atomic int64 (counters and gauges), host-wide."""
    cdef Segment seg
    cdef int64_t *v
    cdef readonly int64_t n

    def add(self, Py_ssize_t index, int64_t delta=1):
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("counter index out of range")
        fi_fetch_add(&self.v[index], delta)

    def get(self, Py_ssize_t index):
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("counter index out of range")
        return fi_load(&self.v[index])

    def set(self, Py_ssize_t index, int64_t value):
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("counter index out of range")
        fi_store(&self.v[index], value)

    def snapshot(self):
        """Every counter, read once each (relaxed: a scrape, not a transaction), as an
        ``array.array('q')``: a plain buffer, so a scrape loads no numpy into the worker."""
        if self.seg.base == NULL:
            _closed()
        cdef array.array out = array.clone(_INT64_ARRAY, self.n, zero=False)
        cdef int64_t *dst = <int64_t *>out.data.as_voidptr
        cdef Py_ssize_t i
        for i in range(self.n):
            dst[i] = fi_load_relaxed(&self.v[i])
        return out

    def __len__(self):
        return self.n


cdef int _observe(Histograms hs, Py_ssize_t index, double value) except -1:
    """``Histograms.observe`` for C callers."""
    if hs.seg.base == NULL:
        _closed()
    if <size_t>index >= <size_t>hs.n:
        raise IndexError("histogram index out of range")
    if not isfinite(value):
        raise ValueError("histogram observation must be finite")
    cdef int64_t lo = 0, hi = hs.nb, mid
    while lo < hi:                       # first bound >= value: Prometheus `le`
        mid = (lo + hi) >> 1
        if hs.bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    cdef int64_t *c = <int64_t *>(hs.base + index * hs.stride)
    fi_fetch_add(&c[lo], 1)
    fi_fetch_add(&c[hs.nb + 1], _sum_ns(value))
    return 0


cdef class Histograms:
    """``n`` fixed-bucket histograms sharing ``bucket_bounds`` (upper bounds,
    ascending, +Inf implicit). Sum kept as int64 nanoseconds."""
    cdef Segment seg
    cdef char *base
    cdef int64_t stride
    cdef double *bounds
    cdef int64_t nb
    cdef readonly int64_t n
    cdef readonly list bucket_bounds

    def observe(self, Py_ssize_t index, double value):
        _observe(self, index, value)

    def snapshot(self, Py_ssize_t index):
        """(cumulative bucket counts incl. +Inf, count, sum seconds)."""
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("histogram index out of range")
        cdef int64_t *c = <int64_t *>(self.base + index * self.stride)
        cdef int64_t acc = 0, i
        cum = []
        for i in range(self.nb + 1):
            acc += fi_load_relaxed(&c[i])
            cum.append(acc)
        return cum, acc, fi_load_relaxed(&c[self.nb + 1]) / 1e9

    def raw(self, Py_ssize_t index):
        """(count per bucket incl. +Inf, not cumulative; sum in ns): for carrying a
        histogram into a new segment with ``add_raw``."""
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("histogram index out of range")
        cdef int64_t *c = <int64_t *>(self.base + index * self.stride)
        return [fi_load_relaxed(&c[i]) for i in range(self.nb + 1)], fi_load_relaxed(&c[self.nb + 1])

    def add_raw(self, Py_ssize_t index, counts, int64_t sum_ns):
        """Add what ``raw`` gave (of a histogram with the same bounds)."""
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("histogram index out of range")
        if len(counts) != self.nb + 1:
            raise ValueError("counts must have one entry per bucket, +Inf included")
        cdef int64_t *c = <int64_t *>(self.base + index * self.stride)
        cdef Py_ssize_t i
        for i in range(self.nb + 1):
            if counts[i]:
                fi_fetch_add(&c[i], <int64_t>counts[i])
        if sum_ns:
            fi_fetch_add(&c[self.nb + 1], sum_ns)

    def __len__(self):
        return self.n
