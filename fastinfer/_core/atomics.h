/* fastinfer/_core/atomics.h -- C side of the shared-memory core (shm.pyx).
 *
 * Owns: the byte layout of the host-wide segment (plain C structs, 64-byte
 * aligned so that hot words sit on their own cache lines), thin typed
 * wrappers over the GCC __atomic builtins, the process-shared robust mutex
 * initialiser, the monotonic clock and the wake-fd write.
 *
 * Must not touch: anything Python. No allocation, no policy. Everything here
 * is static inline and header-only (the repository ignores *.c files).
 *
 * Bump FI_SHM_VERSION whenever a struct below changes shape.
 */
#ifndef FASTINFER_ATOMICS_H
#define FASTINFER_ATOMICS_H

#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define FI_SHM_MAGIC   0x314d4853464e4946ULL   /* "FINFSHM1" little-endian */
#define FI_SHM_VERSION 1
#define FI_CACHELINE   64
#define FI_ALIGNED     __attribute__((aligned(FI_CACHELINE)))

/* queue entry states */
#define FI_E_FREE    0
#define FI_E_WAITING 1
#define FI_E_GRANTED 2

#define FI_TICKET_BITS 24
#define FI_TICKET_MASK ((1LL << FI_TICKET_BITS) - 1)

#define FI_WAIT_ONE  (1LL << 32)      /* one waiter in the admission word */
#define FI_LOW_MASK  0xFFFFFFFFLL     /* in-flight half of the admission word */
#define FI_SUM_CLAMP 9.0e18           /* |histogram sum increment| cap, ns */

/* ------------------------------------------------------------------ atomics */
static inline int64_t fi_load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int64_t fi_load_relaxed(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void fi_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int fi_cas(int64_t *p, int64_t *expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
}
static inline int64_t fi_fetch_add(int64_t *p, int64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t fi_xchg(int64_t *p, int64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

static inline int64_t fi_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* vDSO: no syscall */
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

/* Wake a worker: an 8-byte native (little-endian on x86/arm) uint64 1.
 * An eventfd needs exactly 8 bytes; a pipe reader reads 8-byte units.
 * Errors (EAGAIN on a full pipe / saturated eventfd, EBADF) are ignored:
 * a full pipe or non-zero eventfd already means "wake up". */
static inline int fi_wake(int fd) {
    uint64_t one = 1;
    ssize_t r;
    if (fd < 0) return -1;
    do { r = write(fd, &one, sizeof one); } while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof one ? 0 : -1;
}

static inline int fi_mutex_init(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r) return r;
    if (!r) r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!r) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!r) r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return r;
}

/* ------------------------------------------------------------------ layout */
/* Segment = header | workers[n_workers] | admissions[n_deployments]
 *         | wd[n_workers * n_deployments] | entries (per deployment pools)
 *         | breakers[n_breakers] | probe_owner[n_workers * n_breakers] (int64)
 *         | counters[n_counters] (int64) | bounds[n_buckets] (double)
 *         | histograms (n_histograms * hist_stride bytes)
 * Every section starts on a 64-byte boundary; offsets live in the header. */
typedef struct {
    uint64_t magic;             /* written last by create (release store) */
    int64_t version;
    int64_t abi;                /* sizes of the structs below, folded */
    int64_t total_size;
    int64_t n_workers, n_deployments, n_counters, n_histograms, n_buckets, n_breakers;
    int64_t off_workers, off_adm, off_wd, off_entries, off_breakers, off_probe_owner;
    int64_t off_counters, off_bounds, off_hist, hist_stride;
} FI_ALIGNED fi_header;

typedef struct {
    int64_t pid;
    int64_t wake_fd;            /* -1: none */
    int64_t registered;
} FI_ALIGNED fi_worker;

typedef struct {
    /* line 0: the admission word, the only thing the fast path touches.
     * low 32 bits: slots in flight; high 32 bits: waiting (ungranted) tickets.
     * Invariant: waiting > 0  =>  in_flight == max_concurrency. */
    int64_t word FI_ALIGNED;
    /* line 1: read-only configuration */
    int64_t max_concurrency FI_ALIGNED;
    int64_t queue_capacity;
    int64_t n_replicas;
    int64_t breaker_base;
    int64_t pool_size;          /* queue_capacity + max_concurrency entries */
    int64_t off_entries;
    /* line 2+: guarded by mutex */
    pthread_mutex_t mutex FI_ALIGNED;
    int64_t next_seq;           /* host-wide arrival sequence */
    int64_t free_head;          /* singly linked through entry.next */
    int64_t head[4];
    int64_t tail[4];
    int64_t n_by_prio[4];       /* read without the lock (atomic loads) */
} fi_admission;

typedef struct {
    int64_t gen;                /* bumped at every allocation */
    int64_t state;              /* FI_E_* */
    int64_t worker;
    int64_t prio;
    int64_t prev, next;         /* priority list or the worker's granted list */
    int64_t seq;
    int64_t _pad;
} fi_entry;                     /* 64 bytes */

typedef struct {                /* per (worker, deployment) owner record */
    int64_t held;               /* slots this worker owns (taken) */
    int64_t g_count;            /* granted, not yet taken (read lock-free) */
    int64_t g_head, g_tail;     /* granted list, guarded by the admission mutex */
} FI_ALIGNED fi_wd;

typedef struct {
    /* line 0: read on every check(): state word + config */
    int64_t word FI_ALIGNED;    /* (open_until_ns << 2) | state; state 0 closed, 1 open */
    int64_t threshold;
    int64_t open_ns;
    int64_t max_open_ns;
    int64_t max_probes;
    /* line 1: written on failures / probes */
    int64_t failures FI_ALIGNED;
    int64_t probes;
    int64_t cur_open_ns;
    int64_t half_marker;        /* open_until of the last open period seen half-open */
    int64_t trans[3];           /* into closed, open, half-open */
} fi_breaker;

/* hot words own their cache lines */
#include <stddef.h>
_Static_assert(offsetof(fi_admission, word) == 0, "admission word at line 0");
_Static_assert(offsetof(fi_admission, max_concurrency) == FI_CACHELINE, "admission config on line 1");
_Static_assert(offsetof(fi_admission, mutex) % FI_CACHELINE == 0, "admission lock on its own line");
_Static_assert(offsetof(fi_breaker, failures) == FI_CACHELINE, "breaker counters on line 1");
_Static_assert(sizeof(fi_entry) == FI_CACHELINE, "one queue entry per line");
_Static_assert(sizeof(fi_wd) == FI_CACHELINE && sizeof(fi_worker) == FI_CACHELINE, "per-worker lines");

static inline int64_t fi_abi(void) {
    return (int64_t)sizeof(fi_header) ^ ((int64_t)sizeof(fi_worker) << 8)
         ^ ((int64_t)sizeof(fi_admission) << 16) ^ ((int64_t)sizeof(fi_entry) << 28)
         ^ ((int64_t)sizeof(fi_wd) << 36) ^ ((int64_t)sizeof(fi_breaker) << 44)
         ^ ((int64_t)sizeof(pthread_mutex_t) << 54);
}

#endif
