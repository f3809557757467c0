# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Host-wide shared-memory structures of the compiled core.

Owns: one POSIX shared-memory segment (``/dev/shm/<name>``) created by the
supervisor before it forks the workers, and everything that lives in it:

* ``Admission`` per deployment: ``max_concurrency`` slots and a bounded
  priority queue (critical > high > normal > background, FIFO within a class
  by host-wide arrival order). Fast path: one CAS on a single 64-bit word
  (low half: slots in flight, high half: waiting tickets). Slow path: a
  process-shared robust mutex. A released slot passes directly to the best
  waiter host-wide, whose worker is woken through its wake fd.
* ``Breaker`` per (deployment, replica): atomics only; one atomic load in the
  closed state, ``clock_gettime(CLOCK_MONOTONIC)`` only when open.
* ``Counters`` (int64) and ``Histograms`` (fixed buckets, Prometheus ``le``).
* Owner records (held slots per (worker, deployment), each ticket's worker,
  probes per (worker, breaker)) so that ``Segment.reclaim_worker`` gives back
  everything a dead worker held.

Must not touch: configuration parsing, HTTP, asyncio, logging. Plain ints and
floats in and out; no Python object ever lives in shared memory. The pure
Python oracle with the same API is ``fastinfer._core.ref.shm``; both take
their ``Layout`` from ``fastinfer._core.layout``.
"""
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset
from libc.math cimport floor, isfinite
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

import os

import numpy

from .layout import Layout   # one pure-Python Layout, shared with the reference

__all__ = [
    "Layout", "Segment", "Admission", "Breaker", "Counters", "Histograms", "SegmentError",
    "GRANTED_NOW", "QUEUE_FULL", "CLOSED", "OPEN", "HALF_OPEN", "ALLOWED", "REJECTED", "PROBE",
    "CRITICAL", "HIGH", "NORMAL", "BACKGROUND", "LAYOUT_VERSION",
]

cdef extern from "atomics.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_mutex_consistent(pthread_mutex_t *m)
    int EOWNERDEAD
    int EBUSY

    uint64_t FI_SHM_MAGIC
    int FI_SHM_VERSION
    int FI_E_FREE
    int FI_E_WAITING
    int FI_E_GRANTED
    int FI_TICKET_BITS
    int64_t FI_TICKET_MASK
    int64_t WAIT_ONE "FI_WAIT_ONE"
    int64_t LOW_MASK "FI_LOW_MASK"
    double SUM_CLAMP "FI_SUM_CLAMP"

    int64_t fi_load(const int64_t *p)
    int64_t fi_load_relaxed(const int64_t *p)
    void fi_store(int64_t *p, int64_t v)
    bint fi_cas(int64_t *p, int64_t *expected, int64_t desired)
    int64_t fi_fetch_add(int64_t *p, int64_t v)
    int64_t fi_xchg(int64_t *p, int64_t v)
    int64_t fi_now_ns()
    int fi_wake(int fd)
    int fi_mutex_init(pthread_mutex_t *m)
    int64_t fi_abi()

    ctypedef struct fi_header:
        uint64_t magic
        int64_t version, abi, total_size
        int64_t n_workers, n_deployments, n_counters, n_histograms, n_buckets, n_breakers
        int64_t off_workers, off_adm, off_wd, off_entries, off_breakers, off_probe_owner
        int64_t off_counters, off_bounds, off_hist, hist_stride

    ctypedef struct fi_worker:
        int64_t pid, wake_fd, registered

    ctypedef struct fi_admission:
        int64_t word
        int64_t max_concurrency, queue_capacity, n_replicas, breaker_base, pool_size, off_entries
        pthread_mutex_t mutex
        int64_t next_seq, free_head
        int64_t head[4]
        int64_t tail[4]
        int64_t n_by_prio[4]

    ctypedef struct fi_entry:
        int64_t gen, state, worker, prio, prev, next, seq

    ctypedef struct fi_wd:
        int64_t held, g_count, g_head, g_tail

    ctypedef struct fi_breaker:
        int64_t word, threshold, open_ns, max_open_ns, max_probes
        int64_t failures, probes, cur_open_ns, half_marker
        int64_t trans[3]


GRANTED_NOW = -2          # enqueue(): a slot was free, the caller owns it now
QUEUE_FULL = -1           # enqueue(): queue at capacity
CLOSED, OPEN, HALF_OPEN = 0, 1, 2          # Breaker.state
ALLOWED, REJECTED, PROBE = 0, 1, 2         # Breaker.check()
CRITICAL, HIGH, NORMAL, BACKGROUND = 0, 1, 2, 3
LAYOUT_VERSION = FI_SHM_VERSION


class SegmentError(ValueError):
    """A segment is missing, foreign, of another layout version, or closed."""


cdef inline int64_t _up(int64_t x):
    return (x + 63) & ~(<int64_t>63)


cdef inline int64_t _take(int64_t *off, int64_t nbytes):
    """Place a region of ``nbytes`` at ``off[0]``; advance ``off[0]`` past it to the
    next 64-byte boundary, so that no two regions share a cache line."""
    cdef int64_t start = off[0]
    off[0] = _up(start + nbytes)
    return start


cdef inline int64_t _ns(double seconds):
    return <int64_t>(seconds * 1e9 + 0.5)


cdef inline int64_t _sum_ns(double value):
    cdef double x = value * 1e9
    if x > SUM_CLAMP:
        x = SUM_CLAMP
    elif x < -SUM_CLAMP:
        x = -SUM_CLAMP
    return <int64_t>floor(x + 0.5)


cdef inline int _closed() except -1:
    raise SegmentError("shared-memory segment is closed")


def _path(name):
    name = name[1:] if name.startswith("/") else name
    if not name or "/" in name or "\0" in name:
        raise ValueError(f"bad segment name {name!r}")
    return name, "/dev/shm/" + name


cdef void _plan(fi_header *h, object layout):
    """Fill sizes and offsets of the header from a Layout."""
    cdef int64_t nw = layout.n_workers, nd = len(layout.deployments)
    cdef int64_t nb = 0, pool = 0, off
    for mc, qc, nr in layout.deployments:
        nb += nr
        pool += mc + qc
    h.version = FI_SHM_VERSION
    h.abi = fi_abi()
    h.n_workers = nw
    h.n_deployments = nd
    h.n_counters = layout.n_counters
    h.n_histograms = layout.n_histograms
    h.n_buckets = len(layout.bucket_bounds)
    h.n_breakers = nb
    h.hist_stride = _up((h.n_buckets + 2) * sizeof(int64_t))   # buckets incl. +Inf, then sum_ns
    off = _up(sizeof(fi_header))
    h.off_workers = _take(&off, nw * sizeof(fi_worker))
    h.off_adm = _take(&off, nd * sizeof(fi_admission))
    h.off_wd = _take(&off, nw * nd * sizeof(fi_wd))
    h.off_entries = _take(&off, pool * sizeof(fi_entry))
    h.off_breakers = _take(&off, nb * sizeof(fi_breaker))
    h.off_probe_owner = _take(&off, nw * nb * sizeof(int64_t))
    h.off_counters = _take(&off, h.n_counters * sizeof(int64_t))
    h.off_bounds = _take(&off, h.n_buckets * sizeof(double))
    h.off_hist = _take(&off, h.n_histograms * h.hist_stride)
    h.total_size = off


cdef class Segment:
    """A mapped segment. ``create`` in the supervisor, ``attach`` (or simply
    inherit the object across fork) in the workers."""
    cdef char *base
    cdef fi_header *hdr
    cdef readonly int64_t nbytes
    cdef readonly object layout
    cdef readonly str name
    cdef readonly str path
    cdef readonly Counters counters
    cdef readonly Histograms histograms
    cdef list _adm
    cdef list _brk

    def __cinit__(self):
        self.base = NULL

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, <size_t>self.nbytes)
            self.base = NULL

    @staticmethod
    def create(name, layout):
        """Create ``/dev/shm/<name>`` (O_EXCL) sized and initialised for ``layout``."""
        cdef fi_header plan
        cdef Segment seg
        if not isinstance(layout, Layout):
            raise TypeError("layout must be a fastinfer._core.shm.Layout")
        name, path = _path(name)
        memset(&plan, 0, sizeof(plan))
        _plan(&plan, layout)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise FileExistsError(f"shared-memory segment {name!r} already exists ({path}); "
                                  f"unlink it or pick another name") from None
        try:
            os.ftruncate(fd, plan.total_size)
            try:
                os.posix_fallocate(fd, 0, plan.total_size)   # fail now, not with SIGBUS later
            except OSError as e:
                if e.errno not in (95, 22):   # EOPNOTSUPP / EINVAL: fine, lazily allocated
                    raise
            seg = Segment._map(fd, plan.total_size, name, path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        os.close(fd)
        try:
            seg._init(&plan, layout)
            seg._bind(layout)
        except BaseException:
            seg.close()
            seg.unlink()
            raise
        return seg

    @staticmethod
    def attach(name):
        """Map an existing segment; validates magic, layout version and size."""
        cdef Segment seg
        name, path = _path(name)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < sizeof(fi_header):
                raise SegmentError(f"{path} is not a fastinfer shared-memory segment "
                                   f"({size} bytes, too small for a header)")
            seg = Segment._map(fd, size, name, path)
        finally:
            os.close(fd)
        seg._validate()
        seg._bind(seg._read_layout())
        return seg

    @staticmethod
    cdef Segment _map(int fd, int64_t size, str name, str path):
        cdef void *p = mmap(NULL, <size_t>size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(f"mmap of {path} failed")
        cdef Segment seg = Segment.__new__(Segment)
        seg.base = <char *>p
        seg.hdr = <fi_header *>p
        seg.nbytes = size
        seg.name = name
        seg.path = path
        return seg

    cdef int _init(self, fi_header *plan, object layout) except -1:
        cdef fi_header *h = self.hdr
        cdef int64_t i, j, d, off_e, bb = 0
        cdef fi_admission *a
        cdef fi_entry *e
        cdef fi_worker *w
        cdef fi_wd *r
        cdef fi_breaker *b
        cdef double *bounds
        h[0] = plan[0]
        h.magic = 0
        for i in range(h.n_workers):
            w = <fi_worker *>(self.base + h.off_workers) + i
            w.pid = 0
            w.wake_fd = -1
            w.registered = 0
        for i in range(h.n_workers * h.n_deployments):
            r = <fi_wd *>(self.base + h.off_wd) + i
            r.g_head = -1
            r.g_tail = -1
        off_e = h.off_entries
        for d in range(h.n_deployments):
            mc, qc, nr = layout.deployments[d]
            a = <fi_admission *>(self.base + h.off_adm) + d
            a.word = 0
            a.max_concurrency = mc
            a.queue_capacity = qc
            a.n_replicas = nr
            a.breaker_base = bb
            a.pool_size = mc + qc
            a.off_entries = off_e
            rc = fi_mutex_init(&a.mutex)
            if rc:
                raise OSError(rc, "pthread_mutex_init (process-shared, robust): " + os.strerror(rc))
            a.next_seq = 0
            for j in range(4):
                a.head[j] = -1
                a.tail[j] = -1
                a.n_by_prio[j] = 0
            e = <fi_entry *>(self.base + off_e)
            for j in range(a.pool_size):
                e[j].state = FI_E_FREE
                e[j].gen = 0
                e[j].worker = -1
                e[j].prev = -1
                e[j].next = j + 1 if j + 1 < a.pool_size else -1
            a.free_head = 0 if a.pool_size > 0 else -1
            off_e += a.pool_size * sizeof(fi_entry)
            bb += nr
        for i in range(h.n_breakers):
            b = <fi_breaker *>(self.base + h.off_breakers) + i
            b.word = 0
            b.threshold = 5
            b.open_ns = _ns(30.0)
            b.max_open_ns = _ns(300.0)
            b.max_probes = 1
            b.cur_open_ns = b.open_ns
        bounds = <double *>(self.base + h.off_bounds)
        for i, x in enumerate(layout.bucket_bounds):
            bounds[i] = x
        fi_store(<int64_t *>&h.magic, <int64_t>FI_SHM_MAGIC)   # publish last
        return 0

    cdef _validate(self):
        cdef fi_header *h = self.hdr
        cdef uint64_t magic = <uint64_t>fi_load(<int64_t *>&h.magic)
        if magic != FI_SHM_MAGIC:
            raise SegmentError(f"{self.path} is not a fastinfer shared-memory segment "
                               f"(bad magic 0x{magic:016x})")
        if h.version != FI_SHM_VERSION:
            raise SegmentError(f"{self.path} has shared-memory layout version {h.version}, "
                               f"this build expects {FI_SHM_VERSION}: restart all processes "
                               f"on one build (or unlink the stale segment)")
        if h.abi != fi_abi():
            raise SegmentError(f"{self.path} was created by a build with different struct sizes")
        if h.total_size != self.nbytes:
            raise SegmentError(f"{self.path} is {self.nbytes} bytes, its header says {h.total_size}")

    cdef object _read_layout(self):
        cdef fi_header *h = self.hdr
        cdef fi_admission *a
        cdef double *bounds = <double *>(self.base + h.off_bounds)
        cdef int64_t d, i
        deps = []
        for d in range(h.n_deployments):
            a = <fi_admission *>(self.base + h.off_adm) + d
            deps.append((a.max_concurrency, a.queue_capacity, a.n_replicas))
        return Layout(h.n_workers, deps, h.n_counters, h.n_histograms,
                      [bounds[i] for i in range(h.n_buckets)])

    cdef _bind(self, object layout):
        cdef fi_header *h = self.hdr
        cdef Admission adm
        cdef Breaker brk
        cdef fi_admission *a
        cdef int64_t d, rr
        self.layout = layout
        self._adm = []
        self._brk = []
        for d in range(h.n_deployments):
            a = <fi_admission *>(self.base + h.off_adm) + d
            adm = Admission.__new__(Admission)
            adm.seg = self
            adm.a = a
            adm.entries = <fi_entry *>(self.base + a.off_entries)
            adm.wd = <fi_wd *>(self.base + h.off_wd)
            adm.workers = <fi_worker *>(self.base + h.off_workers)
            adm.n_workers = h.n_workers
            adm.n_dep = h.n_deployments
            adm.d = d
            adm.maxc = a.max_concurrency
            self._adm.append(adm)
            reps = []
            for rr in range(a.n_replicas):
                brk = Breaker.__new__(Breaker)
                brk.seg = self
                brk.b = <fi_breaker *>(self.base + h.off_breakers) + a.breaker_base + rr
                brk.owner = <int64_t *>(self.base + h.off_probe_owner) + a.breaker_base + rr
                brk.n_breakers = h.n_breakers
                brk.n_workers = h.n_workers
                reps.append(brk)
            self._brk.append(reps)
        self.counters = Counters.__new__(Counters)
        self.counters.seg = self
        self.counters.v = <int64_t *>(self.base + h.off_counters)
        self.counters.n = h.n_counters
        self.histograms = Histograms.__new__(Histograms)
        self.histograms.seg = self
        self.histograms.base = self.base + h.off_hist
        self.histograms.stride = h.hist_stride
        self.histograms.bounds = <double *>(self.base + h.off_bounds)
        self.histograms.nb = h.n_buckets
        self.histograms.n = h.n_histograms
        self.histograms.bucket_bounds = list(layout.bucket_bounds)

    def close(self):
        """Unmap (idempotent). Objects obtained from this segment then raise SegmentError."""
        if self.base != NULL:
            munmap(self.base, <size_t>self.nbytes)
            self.base = NULL
            self.hdr = NULL

    def unlink(self):
        """Remove /dev/shm/<name> (idempotent). Mappings stay valid until closed."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    @property
    def closed(self):
        return self.base == NULL

    cdef int _check_worker(self, int64_t worker) except -1:
        if self.base == NULL:
            _closed()
        if <uint64_t>worker >= <uint64_t>self.hdr.n_workers:
            raise IndexError("worker index out of range")
        return 0

    def register_worker(self, int64_t worker, int64_t pid, int64_t wake_fd):
        """Record the worker's pid and the wake fd (an eventfd or pipe write end
        inherited by every worker) that ``release`` writes when it grants a slot."""
        self._check_worker(worker)
        cdef fi_worker *w = <fi_worker *>(self.base + self.hdr.off_workers) + worker
        fi_store(&w.pid, pid)
        fi_store(&w.wake_fd, wake_fd)
        fi_store(&w.registered, 1)

    def reclaim_worker(self, int64_t worker):
        """Supervisor, after ``worker`` died: free its slots (handing them to the
        best waiters), drop its tickets, return its probes."""
        self._check_worker(worker)
        cdef int64_t slots = 0, tickets = 0, probes = 0, n, i
        cdef Admission adm
        cdef fi_header *h = self.hdr
        cdef int64_t *owner = <int64_t *>(self.base + h.off_probe_owner) + worker * h.n_breakers
        cdef fi_breaker *b
        for adm in self._adm:
            s, t = adm._reclaim(worker)
            slots += s
            tickets += t
        for i in range(h.n_breakers):
            n = fi_xchg(&owner[i], 0)
            if n:
                b = <fi_breaker *>(self.base + h.off_breakers) + i
                fi_fetch_add(&b.probes, -n)
                probes += n
        fi_store(&(<fi_worker *>(self.base + h.off_workers) + worker).pid, 0)
        return {"slots": slots, "tickets": tickets, "probes": probes}

    def admission(self, Py_ssize_t deployment):
        if self.base == NULL:
            _closed()
        if <size_t>deployment >= <size_t>len(self._adm):
            raise IndexError("deployment index out of range")
        return self._adm[deployment]

    def breaker(self, Py_ssize_t deployment, Py_ssize_t replica):
        if self.base == NULL:
            _closed()
        if <size_t>deployment >= <size_t>len(self._brk):
            raise IndexError("deployment index out of range")
        reps = self._brk[deployment]
        if <size_t>replica >= <size_t>len(reps):
            raise IndexError("replica index out of range")
        return reps[replica]

    def __repr__(self):
        return f"<Segment {self.path} {self.nbytes} bytes{' closed' if self.base == NULL else ''}>"


cdef inline int _enter(Segment seg, int64_t worker, int64_t n_workers) except -1:
    """Raise unless ``seg`` is still mapped and ``0 <= worker < n_workers``: the
    first step of every Admission and Breaker call that names a worker. A
    module-level inline function, so the hot paths pay no method dispatch."""
    if seg.base == NULL:
        _closed()
    if <uint64_t>worker >= <uint64_t>n_workers:
        raise IndexError("worker index out of range")
    return 0


cdef class Admission:
    """Host-wide slots + bounded priority queue of one deployment."""
    cdef Segment seg
    cdef fi_admission *a
    cdef fi_entry *entries
    cdef fi_wd *wd
    cdef fi_worker *workers
    cdef int64_t n_workers, n_dep, d, maxc

    # ------------------------------------------------------------ helpers
    cdef inline fi_wd *_rec(self, int64_t worker):
        return &self.wd[worker * self.n_dep + self.d]

    cdef int _lock(self) except -1:
        cdef int r = pthread_mutex_trylock(&self.a.mutex)
        if r == EBUSY:
            with nogil:
                r = pthread_mutex_lock(&self.a.mutex)
        if r == 0:
            return 0
        if r == EOWNERDEAD:
            # The previous owner died inside a critical section: rebuild the
            # derived structure from the entry states, then mark it consistent.
            try:
                self._repair()
            finally:
                pthread_mutex_consistent(&self.a.mutex)
            return 0
        raise OSError(r, "admission lock: " + os.strerror(r))

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

    cdef int64_t _grant_best(self):
        """Lock held, waiting > 0: pass the slot being freed to the best waiter.
        Returns the woken worker's wake fd (or -1)."""
        cdef int64_t p, i
        for p in range(4):
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
        if <uint64_t>priority > 3:
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
                        return GRANTED_NOW
                    continue
                if (w >> 32) >= self.a.queue_capacity:
                    return QUEUE_FULL
                if self.a.free_head < 0:
                    raise RuntimeError("admission entry pool exhausted (corrupt segment?)")
                if fi_cas(&self.a.word, &w, w + WAIT_ONE):
                    break
            i = self.a.free_head
            e = &self.entries[i]
            self.a.free_head = e.next
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
        cdef int64_t h = fi_load(held), w, woken = -1
        while True:
            if h <= 0:
                raise RuntimeError(f"worker {worker} holds no slot of this deployment")
            if fi_cas(held, &h, h - 1):
                break
        w = fi_load(&self.a.word)
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
            for i in range(self.a.pool_size):
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

    cdef void _repair(self):
        """Lock held (owner died mid-update, or counts disagree): rebuild the
        priority lists, granted lists and free list from the entry states, fix
        the waiting count, and grant free slots to waiters."""
        cdef fi_admission *a = self.a
        cdef fi_entry *e
        cdef fi_wd *r
        cdef int64_t i, p, w, nw, maxseq = -1, woken
        waiting = []
        granted = []
        for p in range(4):
            a.head[p] = -1
            a.tail[p] = -1
            a.n_by_prio[p] = 0
        for i in range(self.n_workers):
            r = self._rec(i)
            r.g_head = -1
            r.g_tail = -1
            fi_store(&r.g_count, 0)
        a.free_head = -1
        for i in range(a.pool_size - 1, -1, -1):
            e = &self.entries[i]
            if e.state == FI_E_WAITING and 0 <= e.worker < self.n_workers and 0 <= e.prio <= 3:
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

    def _debug_lock(self, bint corrupt=False):
        """TESTS ONLY: take the lock and never release it (the caller then dies,
        leaving the robust mutex EOWNERDEAD). corrupt=True also counts a phantom
        waiter, as if the owner died in the middle of enqueue."""
        self._lock()
        if corrupt:
            fi_fetch_add(&self.a.word, WAIT_ONE)

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


cdef class Breaker:
    """Circuit breaker of one (deployment, replica); atomics only."""
    cdef Segment seg
    cdef fi_breaker *b
    cdef int64_t *owner          # probe owner of worker w: owner[w * n_breakers]
    cdef int64_t n_breakers, n_workers

    def configure(self, int64_t failure_threshold, double open_s, double max_open_s,
                  int64_t half_open_probes):
        if self.seg.base == NULL:
            _closed()
        if failure_threshold < 1 or half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be >= 1")
        if not (0 <= open_s <= max_open_s) or not isfinite(max_open_s):
            raise ValueError("need 0 <= open_s <= max_open_s (finite)")
        fi_store(&self.b.threshold, failure_threshold)
        fi_store(&self.b.open_ns, _ns(open_s))
        fi_store(&self.b.max_open_ns, _ns(max_open_s))
        fi_store(&self.b.max_probes, half_open_probes)
        fi_store(&self.b.cur_open_ns, _ns(open_s))

    cdef inline void _mark_half(self, int64_t until):
        cdef int64_t m = fi_load(&self.b.half_marker)
        while m != until:
            if fi_cas(&self.b.half_marker, &m, until):
                fi_fetch_add(&self.b.trans[2], 1)
                return

    def check(self, int64_t worker):
        """0 allowed (closed), 1 rejected (open), 2 allowed as a half-open probe."""
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w = fi_load(&self.b.word)
        if (w & 3) == 0:
            return 0
        return self._check_open(w, worker)

    cdef int _check_open(self, int64_t w, int64_t worker):
        cdef int64_t until = w >> 2, p, maxp
        if fi_now_ns() < until:
            return 1
        self._mark_half(until)
        p = fi_load(&self.b.probes)
        maxp = fi_load(&self.b.max_probes)
        while True:
            if p >= maxp:
                return 1
            if fi_cas(&self.b.probes, &p, p + 1):
                break
        fi_fetch_add(&self.owner[worker * self.n_breakers], 1)
        return 2

    cdef void _drop_probe(self, int64_t worker):
        cdef int64_t *o = &self.owner[worker * self.n_breakers]
        cdef int64_t n = fi_load(o)
        while n > 0:
            if fi_cas(o, &n, n - 1):
                fi_fetch_add(&self.b.probes, -1)
                return

    def record_success(self, int64_t worker, bint probe=False):
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w
        if not probe:
            w = fi_load(&self.b.word)
            if (w & 3) == 0 and fi_load_relaxed(&self.b.failures) != 0:
                fi_store(&self.b.failures, 0)
            return
        self._drop_probe(worker)
        w = fi_load(&self.b.word)
        if (w & 3) == 1 and fi_now_ns() >= (w >> 2):
            if fi_cas(&self.b.word, &w, 0):
                fi_store(&self.b.failures, 0)
                fi_store(&self.b.cur_open_ns, fi_load(&self.b.open_ns))
                fi_fetch_add(&self.b.trans[0], 1)

    def record_failure(self, int64_t worker, bint probe=False):
        _enter(self.seg, worker, self.n_workers)
        cdef int64_t w, n, now, open_ns, new
        if not probe:
            w = fi_load(&self.b.word)
            if (w & 3) != 0:
                return
            n = fi_fetch_add(&self.b.failures, 1) + 1
            if n >= fi_load(&self.b.threshold):
                open_ns = fi_load(&self.b.open_ns)
                fi_store(&self.b.cur_open_ns, open_ns)
                now = fi_now_ns()
                if fi_cas(&self.b.word, &w, ((now + open_ns) << 2) | 1):
                    fi_fetch_add(&self.b.trans[1], 1)
            return
        self._drop_probe(worker)
        w = fi_load(&self.b.word)
        now = fi_now_ns()
        if (w & 3) == 1 and now >= (w >> 2):
            new = fi_load(&self.b.cur_open_ns) * 2
            if new > fi_load(&self.b.max_open_ns):
                new = fi_load(&self.b.max_open_ns)
            if fi_cas(&self.b.word, &w, ((now + new) << 2) | 1):
                fi_store(&self.b.cur_open_ns, new)
                fi_fetch_add(&self.b.trans[1], 1)

    def release_probe(self, int64_t worker):
        """A probe ended without a verdict (client left): give it back."""
        _enter(self.seg, worker, self.n_workers)
        self._drop_probe(worker)

    def force_open(self, double duration_s):
        if self.seg.base == NULL:
            _closed()
        if not (duration_s >= 0) or not isfinite(duration_s):
            raise ValueError("duration_s must be finite and >= 0")
        cdef int64_t now = fi_now_ns()
        cdef int64_t old = fi_xchg(&self.b.word, ((now + _ns(duration_s)) << 2) | 1)
        if not ((old & 3) == 1 and now < (old >> 2)):
            fi_fetch_add(&self.b.trans[1], 1)

    def reset(self):
        if self.seg.base == NULL:
            _closed()
        cdef int64_t old = fi_xchg(&self.b.word, 0)
        fi_store(&self.b.failures, 0)
        fi_store(&self.b.cur_open_ns, fi_load(&self.b.open_ns))
        if (old & 3) != 0:
            fi_fetch_add(&self.b.trans[0], 1)

    @property
    def state(self):
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.b.word)
        if (w & 3) == 0:
            return CLOSED
        if fi_now_ns() < (w >> 2):
            return OPEN
        self._mark_half(w >> 2)
        return HALF_OPEN

    @property
    def retry_after_s(self):
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.b.word), left
        if (w & 3) == 0:
            return 0.0
        left = (w >> 2) - fi_now_ns()
        return left / 1e9 if left > 0 else 0.0

    @property
    def transitions(self):
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
        if self.seg.base == NULL:
            _closed()
        arr = numpy.empty(self.n, dtype=numpy.int64)
        cdef int64_t[::1] out = arr
        cdef Py_ssize_t i
        for i in range(self.n):
            out[i] = fi_load_relaxed(&self.v[i])
        return arr

    def __len__(self):
        return self.n


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
        if self.seg.base == NULL:
            _closed()
        if <size_t>index >= <size_t>self.n:
            raise IndexError("histogram index out of range")
        if not isfinite(value):
            raise ValueError("histogram observation must be finite")
        cdef int64_t lo = 0, hi = self.nb, mid
        while lo < hi:                       # first bound >= value: Prometheus `le`
            mid = (lo + hi) >> 1
            if self.bounds[mid] < value:
                lo = mid + 1
            else:
                hi = mid
        cdef int64_t *c = <int64_t *>(self.base + index * self.stride)
        fi_fetch_add(&c[lo], 1)
        fi_fetch_add(&c[self.nb + 1], _sum_ns(value))

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

    def __len__(self):
        return self.n
