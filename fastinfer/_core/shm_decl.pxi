# The C side of shm.pyx (atomics.h, segment.h), declared once for every included part.

cdef extern from "decimal.h" nogil:
    int fi_decimal(char *out, long long n)

cdef extern from "segment.h" nogil:
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

    # constants mirrored in constants.py (checked at import)
    int FI_CRITICAL, FI_HIGH, FI_NORMAL, FI_BACKGROUND, FI_N_PRIORITIES
    int FI_GRANTED_NOW, FI_QUEUE_FULL, FI_TICKET_BITS
    int64_t FI_TICKET_MASK
    int FI_CLOSED, FI_OPEN, FI_HALF_OPEN, FI_ALLOWED, FI_REJECTED, FI_PROBE
    int FI_SESSION_NONE, FI_SESSION_OPENING, FI_SESSION_OPEN, FI_SESSION_CLOSING
    int FI_ROUND_ROBIN, FI_LEAST_LOADED, FI_POWER_OF_TWO, FI_LATENCY, FI_NO_REPLICA
    double FI_EWMA_ALPHA
    int FI_N_LEASES, FI_MAX_WORKERS, FI_MAX_REPLICAS
    int64_t FI_MAX_POOL, FI_MAX_SPAN_NS, FI_MAX_SPEND, FI_MAX_PERIOD
    int FI_SPEND_BITS, FI_SESSION_STRIPE, FI_PREFIX_WAYS

    # C-only
    int FI_E_FREE, FI_E_WAITING, FI_E_GRANTED
    int64_t WAIT_ONE "FI_WAIT_ONE"
    int64_t LOW_MASK "FI_LOW_MASK"
    int FI_BRK_BITS
    int64_t FI_BRK_MASK, FI_BRK_OPEN, FI_BRK_MAX_UNTIL
    int FI_LEASE_BITS
    int64_t FI_LEASE_MASK
    int FI_SLOT_EMPTY, FI_SLOT_LIVE, FI_SLOT_TOMB, FI_SLOT_WRITING
    int64_t FI_SEQ_LOCKED
    int FI_SEQ_OWNER_SHIFT, FI_SEQ_SHIFT
    double SUM_CLAMP "FI_SUM_CLAMP"

    int64_t fi_load(const int64_t *p)
    int64_t fi_load_relaxed(const int64_t *p)
    void fi_store(int64_t *p, int64_t v)
    void fi_store_relaxed(int64_t *p, int64_t v)
    bint fi_cas(int64_t *p, int64_t *expected, int64_t desired)
    int64_t fi_fetch_add(int64_t *p, int64_t v)
    int64_t fi_fetch_or(int64_t *p, int64_t v)
    int64_t fi_fetch_and(int64_t *p, int64_t v)
    int64_t fi_xchg(int64_t *p, int64_t v)
    void fi_fence_acquire()
    int fi_popcount(uint64_t x)
    int fi_ctz(uint64_t x)
    double fi_bits_to_double(int64_t b)
    int64_t fi_double_to_bits(double d)
    int64_t fi_now_ns()
    int64_t fi_span_ns(double seconds)
    uint64_t fi_mix64(uint64_t x)
    int fi_wake(int fd)
    int fi_mutex_init(pthread_mutex_t *m)
    int64_t fi_abi()

    ctypedef struct fi_header:
        uint64_t magic
        int64_t version, abi, total_size
        int64_t n_workers, n_deployments, n_counters, n_histograms, n_buckets, n_breakers
        int64_t off_workers, off_adm, off_wd, off_entries, off_breakers, off_probe_owner
        int64_t off_counters, off_bounds, off_hist, hist_stride
        int64_t off_deployments, off_replicas, off_replica_held, replica_stride
        int64_t n_token_buckets, off_token_buckets
        int64_t n_keys, off_keys, off_key_held, key_stride
        int64_t n_leases, off_leases
        int64_t max_sessions, n_stripes, off_sessions_hdr, off_stripes, off_sessions
        int64_t prefix_total, off_prefix
        int64_t test_clock_ns

    ctypedef struct fi_worker:
        int64_t pid, wake_fd, registered

    ctypedef struct fi_admission:
        int64_t word
        int64_t max_concurrency, queue_capacity, n_replicas, breaker_base, pool_size, off_entries
        pthread_mutex_t mutex
        int64_t dirty, next_seq, free_head, fresh
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

    ctypedef struct fi_deployment:
        int64_t n_replicas, replica_base, brk_threshold, brk_probes
        double brk_open_s, brk_max_open_s
        int64_t prefix_capacity, prefix_sets, off_prefix
        int64_t rr, unhealthy

    ctypedef struct fi_replica:
        int64_t in_flight, ewma_ns, weight

    ctypedef struct fi_bucket:
        int64_t tat, consumed
        double interval_ns
        int64_t tau_ns, burst
        double per_minute
        int64_t remote

    ctypedef struct fi_key:
        int64_t in_flight, limit, spend

    ctypedef struct fi_lease:
        int64_t word

    ctypedef struct fi_sessions:
        int64_t cursor

    ctypedef struct fi_stripe:
        pthread_mutex_t mutex
        int64_t dirty, live, evictions

    ctypedef struct fi_session:
        int64_t state
        uint64_t key_hi, key_lo
        int64_t last_use_ns, ttl_ns
        int32_t deployment, replica, backend_state, backend_replica

    ctypedef struct fi_prefix:
        int64_t seq, hash, mask, last_use_ns
