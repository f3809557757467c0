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
  closed state, the clock only when open. Configured from the ``Layout`` when
  the segment is created, never by the workers.
* ``Counters`` (int64) and ``Histograms`` (fixed buckets, Prometheus ``le``), and a
  ``RequestSeries``: one deployment's or key's words and slots as a request records them.
* ``TokenBucket``s (GCRA: one CAS per take/refund/charge) for the RPM/TPM limits
  of gateway keys and deployments, ``Segment.take_all`` (all or none), and a
  ``BucketPair``: one limit's requests and tokens buckets as one request draws on them.
* ``KeyConcurrency`` (requests in flight per gateway key, host-wide) and
  ``KeySpend`` (micro-USD per key in its budget period, one word with the period).
* A request's ``Grant`` (made by this worker's ``Ledger``): the key's slot and each
  ``LimitDraw``'s bucket pair it took, corrected to the usage and given back once. Per
  request and per worker, not in the segment; here so it reaches the pairs without a call.
* ``Lease``s: per-host background work runs in exactly one worker at a time.
* ``ReplicaLoad`` per deployment: in-flight count and latency EWMA per replica,
  health bits and a round-robin counter; ``pick_and_start`` chooses and counts
  in one atomic step host-wide.
* ``SessionTable``: session key -> replica affinity with idle TTL and backend
  session state, in stripes of 64 slots under robust mutexes (LRU within a stripe).
* ``PrefixIndex`` per deployment: block-chain hash -> replicas that served it,
  set-associative, read lock-free under per-entry sequence words.
* Owner records (what each worker holds) so that ``Segment.reclaim_worker``
  gives back everything a dead worker held.

The source is split by structure: ``shm_decl.pxi`` (the C declarations),
``shm_admission.pxi``, ``shm_breaker.pxi``, ``shm_metrics.pxi``, ... included
below; the byte layout is in ``segment.h``, the memory-ordering rules at the top
of ``atomics.h``, the named constants in ``constants.py``. ``docs/architecture-core.md``
describes every region, its concurrency rules and its API.

Must not touch: configuration parsing, HTTP, asyncio, logging. Plain ints,
floats and bytes in and out; no Python object ever lives in shared memory. The
pure-Python oracle with the same API is ``fastinfer._core.ref.shm``; both take
their ``Layout`` from ``fastinfer._core.layout``.
"""
from cpython cimport array
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset, strlen
from libc.math cimport INFINITY, ceil, fabs, floor, isfinite, rint
from libc.stdio cimport snprintf
from cpython.unicode cimport PyUnicode_DecodeASCII
from fastinfer._core.slots cimport fi_readonly_slots
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

import array
import os

from . import constants as _constants
from .constants import (
    ALLOWED, BACKGROUND, CLOSED, CRITICAL, GRANTED_NOW, HALF_OPEN, HIGH, NORMAL, OPEN, PROBE,
    QUEUE_FULL, REJECTED,
)
from .layout import Layout   # one pure-Python Layout, shared with the reference
from .records import BreakerState

include "shm_decl.pxi"

__all__ = [
    "Layout", "Segment", "Admission", "Breaker", "BreakerSet", "Counters", "Histograms", "SegmentError", "TokenBucket",
    "BucketPair", "KeyConcurrency", "KeySpend", "LimitDraw", "Ledger", "Grant", "RequestSeries", "Lease", "ReplicaLoad", "SessionTable", "SessionInfo", "PrefixIndex",
    "BreakerState",
    "GRANTED_NOW", "QUEUE_FULL", "CLOSED", "OPEN", "HALF_OPEN", "ALLOWED", "REJECTED", "PROBE",
    "CRITICAL", "HIGH", "NORMAL", "BACKGROUND", "LAYOUT_VERSION",
]

LAYOUT_VERSION = FI_SHM_VERSION


def _c_constants():
    """The values atomics.h gives the constants that constants.py names (for the check below
    and tests/core/test_constants.py)."""
    return {
        "CRITICAL": FI_CRITICAL, "HIGH": FI_HIGH, "NORMAL": FI_NORMAL, "BACKGROUND": FI_BACKGROUND,
        "GRANTED_NOW": FI_GRANTED_NOW, "QUEUE_FULL": FI_QUEUE_FULL, "TICKET_BITS": FI_TICKET_BITS,
        "CLOSED": FI_CLOSED, "OPEN": FI_OPEN, "HALF_OPEN": FI_HALF_OPEN,
        "ALLOWED": FI_ALLOWED, "REJECTED": FI_REJECTED, "PROBE": FI_PROBE,
        "SESSION_NONE": FI_SESSION_NONE, "SESSION_OPENING": FI_SESSION_OPENING,
        "SESSION_OPEN": FI_SESSION_OPEN, "SESSION_CLOSING": FI_SESSION_CLOSING,
        "ROUND_ROBIN": FI_ROUND_ROBIN, "LEAST_LOADED": FI_LEAST_LOADED,
        "POWER_OF_TWO": FI_POWER_OF_TWO, "LATENCY": FI_LATENCY, "NO_REPLICA": FI_NO_REPLICA,
        "EWMA_ALPHA": FI_EWMA_ALPHA,
        "N_LEASES": FI_N_LEASES, "MAX_WORKERS": FI_MAX_WORKERS, "MAX_REPLICAS": FI_MAX_REPLICAS,
        "MAX_POOL": FI_MAX_POOL, "MAX_SPAN_NS": FI_MAX_SPAN_NS, "SPEND_BITS": FI_SPEND_BITS,
        "MAX_SPEND": FI_MAX_SPEND, "MAX_PERIOD": FI_MAX_PERIOD,
        "SESSION_STRIPE": FI_SESSION_STRIPE, "PREFIX_WAYS": FI_PREFIX_WAYS,
    }


def _check_constants():
    wrong = {k: (v, getattr(_constants, k)) for k, v in _c_constants().items() if getattr(_constants, k) != v}
    if wrong:
        raise ImportError(f"fastinfer._core: atomics.h and constants.py disagree (C, Python): {wrong}")


_check_constants()


class SegmentError(ValueError):
    """A segment is missing, foreign, of another layout version, or closed."""


cdef inline int64_t _up(int64_t x) noexcept:
    return (x + 63) & ~(<int64_t>63)


cdef inline int64_t _take(int64_t *off, int64_t nbytes) noexcept:
    """Place a region of ``nbytes`` at ``off[0]``; advance ``off[0]`` past it to the
    next 64-byte boundary, so that no two regions share a cache line."""
    cdef int64_t start = off[0]
    off[0] = _up(start + nbytes)
    return start


cdef inline int64_t _sum_ns(double value) noexcept:
    cdef double x = value * 1e9
    if x > SUM_CLAMP:
        x = SUM_CLAMP
    elif x < -SUM_CLAMP:
        x = -SUM_CLAMP
    return <int64_t>floor(x + 0.5)


cdef inline int64_t _now(fi_header *h) noexcept nogil:
    """CLOCK_MONOTONIC ns, or the test clock when a test has set one (rule 9)."""
    cdef int64_t t = fi_load_relaxed(&h.test_clock_ns)
    return t if t != 0 else fi_now_ns()


cdef inline int _closed() except -1:
    raise SegmentError("shared-memory segment is closed")


cdef int _robust_lock(pthread_mutex_t *m, int64_t *dirty) except -1:
    """Lock a robust mutex guarding a structure with a ``dirty`` word (atomics.h rule 7).
    Returns 1 when the caller must repair the structure (its last owner died inside, or a
    repair failed) before using it, 0 otherwise; either way the mutex is held. Raises
    (without the mutex) only when it cannot be locked at all."""
    cdef int r = pthread_mutex_trylock(m)
    if r == EBUSY:
        with nogil:
            r = pthread_mutex_lock(m)
    if r == EOWNERDEAD:
        dirty[0] = 1
        pthread_mutex_consistent(m)
    elif r != 0:
        raise OSError(r, "shared-memory mutex: " + os.strerror(r))
    return 1 if dirty[0] else 0


# TESTS ONLY: the next _fail_repairs repairs raise (to prove no mutex stays held)
cdef int _fail_repairs = 0


def _inject_repair_failures(int n):
    """TESTS ONLY: make the next ``n`` structure repairs raise RuntimeError."""
    global _fail_repairs
    _fail_repairs = n


cdef int _maybe_fail_repair() except -1:
    global _fail_repairs
    if _fail_repairs > 0:
        _fail_repairs -= 1
        raise RuntimeError("injected repair failure (test)")
    return 0


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
    h.off_deployments = _take(&off, nd * sizeof(fi_deployment))
    h.off_replicas = _take(&off, nb * sizeof(fi_replica))
    h.replica_stride = _up(nb * sizeof(int64_t)) // sizeof(int64_t)   # one row of lines per worker
    h.off_replica_held = _take(&off, nw * h.replica_stride * sizeof(int64_t))
    h.n_token_buckets = len(layout.token_buckets)
    h.off_token_buckets = _take(&off, h.n_token_buckets * sizeof(fi_bucket))
    h.n_keys = len(layout.key_max_concurrency)
    h.key_stride = _up(h.n_keys * sizeof(int64_t)) // sizeof(int64_t)   # one row of lines per worker
    h.off_keys = _take(&off, h.n_keys * sizeof(fi_key))
    h.off_key_held = _take(&off, nw * h.key_stride * sizeof(int64_t))
    h.n_leases = FI_N_LEASES
    h.off_leases = _take(&off, h.n_leases * sizeof(fi_lease))
    h.max_sessions = layout.max_sessions
    h.n_stripes = _session_stripes(layout.max_sessions)
    h.off_sessions_hdr = _take(&off, sizeof(fi_sessions))
    h.off_stripes = _take(&off, h.n_stripes * sizeof(fi_stripe))
    h.off_sessions = _take(&off, h.n_stripes * FI_SESSION_STRIPE * sizeof(fi_session))
    h.prefix_total = 0
    for cap in layout.prefix_capacity:
        h.prefix_total += _prefix_sets(cap) * FI_PREFIX_WAYS
    h.off_prefix = _take(&off, h.prefix_total * sizeof(fi_prefix))
    h.total_size = off


cdef int64_t _session_stripes(int64_t max_sessions) noexcept:
    """Stripes for ``max_sessions`` bindings: 1.5 slots per binding, so that a table holding
    max_sessions rarely finds one of its stripes full (keys spread binomially over stripes)."""
    return (max_sessions * 3 // 2 + FI_SESSION_STRIPE - 1) // FI_SESSION_STRIPE


cdef int64_t _prefix_sets(int64_t capacity) noexcept:
    return (capacity + FI_PREFIX_WAYS - 1) // FI_PREFIX_WAYS


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
    cdef readonly SessionTable sessions
    cdef list _adm
    cdef list _brk
    cdef list _buckets
    cdef list _key_conc
    cdef list _key_spend
    cdef list _leases
    cdef list _replicas
    cdef list _prefix

    def __cinit__(self):
        self.base = NULL

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, <size_t>self.nbytes)
            self.base = NULL

    @staticmethod
    def create(name, layout):
        """Create ``/dev/shm/<name>`` (O_EXCL) sized, initialised and configured for ``layout``."""
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

    cdef fi_deployment *_dep(self, int64_t d) noexcept:
        return <fi_deployment *>(self.base + self.hdr.off_deployments) + d

    cdef int _init(self, fi_header *plan, object layout) except -1:
        cdef fi_header *h = self.hdr
        cdef int64_t i, d, bb = 0, off_prefix
        cdef fi_worker *w
        cdef fi_wd *r
        cdef fi_deployment *dep
        cdef double *bounds
        h[0] = plan[0]
        h.magic = 0
        off_prefix = h.off_prefix
        for i in range(h.n_workers):
            w = <fi_worker *>(self.base + h.off_workers) + i
            w.pid = 0
            w.wake_fd = -1
            w.registered = 0
        for i in range(h.n_workers * h.n_deployments):
            r = <fi_wd *>(self.base + h.off_wd) + i
            r.g_head = -1
            r.g_tail = -1
        for d in range(h.n_deployments):
            mc, qc, nr = layout.deployments[d]
            threshold, open_s, max_open_s, probes = layout.breakers[d]
            dep = self._dep(d)
            dep.n_replicas = nr
            dep.replica_base = bb
            dep.brk_threshold = threshold
            dep.brk_probes = probes
            dep.brk_open_s = open_s
            dep.brk_max_open_s = max_open_s
            dep.prefix_capacity = layout.prefix_capacity[d]
            dep.prefix_sets = _prefix_sets(dep.prefix_capacity)
            dep.off_prefix = off_prefix
            off_prefix += dep.prefix_sets * FI_PREFIX_WAYS * sizeof(fi_prefix)
            _init_admission(self, d, mc, qc, nr, bb)
            for i in range(nr):
                _init_breaker(<fi_breaker *>(self.base + h.off_breakers) + bb + i, dep)
                (<fi_replica *>(self.base + h.off_replicas) + bb + i).weight = layout.replica_weights[d][i]
            bb += nr
        bounds = <double *>(self.base + h.off_bounds)
        for i, x in enumerate(layout.bucket_bounds):
            bounds[i] = x
        for i, (per_minute, burst) in enumerate(layout.token_buckets):
            _init_bucket(<fi_bucket *>(self.base + h.off_token_buckets) + i, per_minute, burst)
        for i, limit in enumerate(layout.key_max_concurrency):
            (<fi_key *>(self.base + h.off_keys) + i).limit = limit
        _init_sessions(self)
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
        cdef fi_deployment *dep
        cdef double *bounds = <double *>(self.base + h.off_bounds)
        cdef int64_t d, i
        deps = []
        breakers = []
        weights = []
        prefix = []
        cdef fi_replica *reps = <fi_replica *>(self.base + h.off_replicas)
        for d in range(h.n_deployments):
            a = <fi_admission *>(self.base + h.off_adm) + d
            dep = self._dep(d)
            deps.append((a.max_concurrency, a.queue_capacity, a.n_replicas))
            breakers.append((dep.brk_threshold, dep.brk_open_s, dep.brk_max_open_s, dep.brk_probes))
            weights.append([reps[dep.replica_base + i].weight for i in range(dep.n_replicas)])
            prefix.append(dep.prefix_capacity)
        cdef fi_bucket *tb = <fi_bucket *>(self.base + h.off_token_buckets)
        return Layout(h.n_workers, deps, h.n_counters, h.n_histograms,
                      [bounds[i] for i in range(h.n_buckets)], breakers=breakers, replica_weights=weights,
                      token_buckets=[(tb[i].per_minute, tb[i].burst) for i in range(h.n_token_buckets)],
                      key_max_concurrency=[(<fi_key *>(self.base + h.off_keys) + i).limit
                                           for i in range(h.n_keys)],
                      prefix_capacity=prefix, max_sessions=h.max_sessions)

    cdef _bind(self, object layout):
        cdef fi_header *h = self.hdr
        cdef int64_t d, rr
        cdef fi_deployment *dep
        self.layout = layout
        self._adm = []
        self._brk = []
        self._replicas = []
        self._prefix = []
        for d in range(h.n_deployments):
            dep = self._dep(d)
            self._adm.append(_bind_admission(self, d))
            self._replicas.append(_bind_replica_load(self, d))
            self._prefix.append(_bind_prefix(self, d))
            self._brk.append([_bind_breaker(self, dep.replica_base + rr) for rr in range(dep.n_replicas)])
        self.counters = _bind_counters(self)
        self.histograms = _bind_histograms(self, layout.bucket_bounds)
        self._buckets = [_bind_bucket(self, i) for i in range(h.n_token_buckets)]
        self._key_conc = [_bind_key_concurrency(self, i) for i in range(h.n_keys)]
        self._key_spend = [_bind_key_spend(self, i) for i in range(h.n_keys)]
        self._leases = [_bind_lease(self, i) for i in range(h.n_leases)]
        self.sessions = _bind_sessions(self)

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

    def set_test_clock(self, int64_t now_ns):
        """TESTS ONLY: every structure of this segment reads ``now_ns`` as the monotonic
        clock (ns) from now on; 0 goes back to the real clock."""
        if self.base == NULL:
            _closed()
        if now_ns < 0:
            raise ValueError("now_ns must be >= 0")
        fi_store(&self.hdr.test_clock_ns, now_ns)

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
        best waiters), drop its tickets, return its probes. Returns what it gave back."""
        self._check_worker(worker)
        cdef int64_t slots = 0, tickets = 0
        cdef Admission adm
        for adm in self._adm:
            s, t = adm._reclaim(worker)
            slots += s
            tickets += t
        probes = _reclaim_probes(self, worker)
        key_slots = _reclaim_key_slots(self, worker)
        leases = _reclaim_leases(self, worker)
        replica_load = _reclaim_replica_load(self, worker)
        prefix_entries = _reclaim_prefix(self, worker)
        fi_store(&(<fi_worker *>(self.base + self.hdr.off_workers) + worker).pid, 0)
        return {"slots": slots, "tickets": tickets, "probes": probes, "key_slots": key_slots,
                "leases": leases, "replica_in_flight": replica_load, "prefix_entries": prefix_entries}

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

    def breaker_set(self, Py_ssize_t deployment, Py_ssize_t replicas, int64_t worker):
        """Deployment ``deployment``'s first ``replicas`` breakers as worker ``worker`` uses them (``BreakerSet``)."""
        if <uint64_t>worker >= <uint64_t>self.hdr.n_workers:
            raise IndexError("worker index out of range")
        return BreakerSet([self.breaker(deployment, r) for r in range(replicas)], worker)

    def replicas(self, Py_ssize_t deployment):
        """The host-wide load, health and round-robin turn of ``deployment``'s replicas."""
        if self.base == NULL:
            _closed()
        if <size_t>deployment >= <size_t>len(self._replicas):
            raise IndexError("deployment index out of range")
        return self._replicas[deployment]

    def prefix(self, Py_ssize_t deployment):
        """``deployment``'s prefix index (capacity 0 when the Layout gave it none)."""
        if self.base == NULL:
            _closed()
        if <size_t>deployment >= <size_t>len(self._prefix):
            raise IndexError("deployment index out of range")
        return self._prefix[deployment]

    def bucket(self, Py_ssize_t index):
        """The token bucket ``index`` (the Layout's ``token_buckets[index]``)."""
        if self.base == NULL:
            _closed()
        if <size_t>index >= <size_t>len(self._buckets):
            raise IndexError("token bucket index out of range")
        return self._buckets[index]

    def bucket_pair(self, Py_ssize_t requests, Py_ssize_t tokens):
        """A ``BucketPair`` of token buckets ``requests`` and ``tokens``; -1: that one is absent."""
        if self.base == NULL:
            _closed()
        cdef Py_ssize_t i
        for i in (requests, tokens):
            if i < -1 or i >= self.hdr.n_token_buckets:
                raise IndexError("token bucket index out of range")
        if requests >= 0 and requests == tokens:
            raise ValueError("a pair is two different buckets")
        return _bind_pair(self, requests, tokens)

    def rate_headers(self, pairs):
        """OpenAI's ``x-ratelimit-*`` headers of a request that drew on ``pairs`` (this segment's
        ``BucketPair``s, the key's first, then each deployment's): per kind, from the bucket with the
        least left now (the first of equals); none for a kind no pair has."""
        return _rate_headers(pairs)

    def rate_fields(self, pairs):
        """``rate_headers`` encoded as an answer head's fields: ``name: value`` CR LF each, in order."""
        return _rate_fields(pairs)

    def request_series(self, codes, int64_t other, timed=(-1, -1, -1), tokens=(-1, -1, -1), int64_t cost=-1,
                       int64_t estimated=-1, int64_t generation=-1, attempts=None):
        """A ``RequestSeries`` over this segment's counter words and histogram slots: ``codes`` (status
        -> word) and ``other`` (every other status), ``timed`` (the duration, overhead and
        time-to-first-byte histograms), ``tokens`` (input, output, cached words), ``cost`` (nano-USD),
        ``estimated`` (answers whose usage the gateway counted), ``generation`` (session rebuilds asked
        for), ``attempts`` ((replica, outcome) -> word); -1 where the series has none."""
        if self.base == NULL:
            _closed()
        return _bind_series(self, dict(codes), other, tuple(timed), tuple(tokens), cost, estimated, generation,
                            dict(attempts or {}))

    def ledger(self, int64_t worker, estimate, add_spend):
        """Worker ``worker``'s ``Ledger``: the grants of its requests over this segment's pairs."""
        if self.base == NULL:
            _closed()
        if <uint64_t>worker >= <uint64_t>self.hdr.n_workers:
            raise IndexError("worker index out of range")
        return Ledger(worker, estimate, add_spend)

    def key_concurrency(self, Py_ssize_t key):
        """Gateway key ``key``'s requests in flight (the Layout's ``key_max_concurrency[key]``)."""
        if self.base == NULL:
            _closed()
        if <size_t>key >= <size_t>len(self._key_conc):
            raise IndexError("key index out of range")
        return self._key_conc[key]

    def key_spend(self, Py_ssize_t key):
        """Gateway key ``key``'s spend in its current budget period."""
        if self.base == NULL:
            _closed()
        if <size_t>key >= <size_t>len(self._key_spend):
            raise IndexError("key index out of range")
        return self._key_spend[key]

    def lease(self, Py_ssize_t index):
        """Host lease ``index`` (``constants.LEASE_*``; N_LEASES of them in every segment)."""
        if self.base == NULL:
            _closed()
        if <size_t>index >= <size_t>len(self._leases):
            raise IndexError("lease index out of range")
        return self._leases[index]

    def take_all(self, ids, amounts):
        """Take ``amounts[k]`` tokens from bucket ``ids[k]`` for every k, or none at all (what
        was taken before a bucket refused is given back). Returns ``(True, 0.0)``, or
        ``(False, wait_s)``: seconds until every bucket could hold its amount (inf when an
        amount exceeds its bucket's capacity)."""
        return _take_all(self, ids, amounts)

    def __repr__(self):
        return f"<Segment {self.path} {self.nbytes} bytes{' closed' if self.base == NULL else ''}>"


cdef inline int _enter(Segment seg, int64_t worker, int64_t n_workers) except -1:
    """Raise unless ``seg`` is still mapped and ``0 <= worker < n_workers``: the
    first step of every call that names a worker. A module-level inline function,
    so the hot paths pay no method dispatch."""
    if seg.base == NULL:
        _closed()
    if <uint64_t>worker >= <uint64_t>n_workers:
        raise IndexError("worker index out of range")
    return 0


include "shm_admission.pxi"
include "shm_breaker.pxi"
include "shm_metrics.pxi"
include "shm_series.pxi"
include "shm_limits.pxi"
include "shm_grants.pxi"
include "shm_leases.pxi"
include "shm_routing.pxi"
include "shm_sessions.pxi"
include "shm_prefix.pxi"


# ``Limits.admit`` reads a grant's refusal on every keyed request: at a __slots__ field's speed (``slots.h``)
fi_readonly_slots(Grant, ("refusal",))
