/* fastinfer/_core/atomics.h -- atomics, clock, robust mutex and constants of the
 * shared-memory core (shm.pyx). The struct layout of the segment is in segment.h.
 *
 * Must not touch: anything Python. No allocation, no policy. Everything here is
 * static inline and header-only (the repository ignores *.c files).
 *
 * ======================================================= memory-ordering rules
 * Every process of a host maps the same segment; these rules are what make the
 * structures in it correct across processes (and across CPUs of any memory model
 * GCC supports, not only x86's).
 *
 *  1. Every shared word is read and written only through the wrappers below
 *     (GCC __atomic builtins on 8-byte aligned int64): no torn reads or writes,
 *     no plain access the compiler may cache, split or reorder -- except fields
 *     guarded by a mutex, which are plain while the mutex is held.
 *  2. Loads are ACQUIRE (fi_load), stores are RELEASE (fi_store): a reader that
 *     sees a value also sees everything its writer wrote before storing it.
 *     Read-modify-writes (fi_cas, fi_fetch_add, fi_xchg, fi_fetch_or/and) are
 *     SEQ_CST: one total order of all of them, so a CAS loop never acts on a
 *     stale view it could not detect.
 *  3. RELAXED (fi_load_relaxed) only where no decision depends on ordering with
 *     other words: statistics snapshots (counters, histograms), a test before a
 *     CAS that re-checks the value, the session table's fields under its mutex.
 *  4. One word, one truth. Every lock-free state machine keeps its whole state
 *     in ONE 64-bit word changed by one CAS (admission: in-flight | waiting;
 *     breaker: open_until | state; token bucket: the theoretical arrival time;
 *     spend: period | micro-USD; lease: expiry | holder). Other words beside it
 *     are configuration (written before the segment is published) or derived
 *     counters that may lag the state word but never contradict a decision.
 *  5. Publication: Segment.create fills every region, then stores the header's
 *     magic with RELEASE; attach loads it with ACQUIRE before reading anything.
 *     Configuration words are never written again (a reload makes a new segment).
 *  6. Multi-word records read without a lock (prefix index entries) are guarded
 *     by a per-entry sequence word: a writer CASes it odd (locking the entry
 *     and naming itself), writes, then stores the next even value; a reader
 *     loads it (ACQUIRE), loads the fields (ACQUIRE), loads it again, and keeps
 *     the record only if both loads were the same even value.
 *  7. Mutexes are process-shared and ROBUST. A process that dies holding one
 *     hands the next locker EOWNERDEAD; that locker marks the mutex consistent,
 *     sets the guarded structure's `dirty` flag and repairs it from its per-entry
 *     states before using it. A repair that fails leaves `dirty` set and the
 *     mutex unlocked (the next locker repairs): no call ever returns or raises
 *     holding a mutex.
 *  8. Owner records: whatever a worker holds (admission slots, tickets, probes,
 *     key slots, replica in-flight counts, leases, prefix entry locks) is also
 *     counted under that worker, so Segment.reclaim_worker can give back exactly
 *     what a dead worker held, and nothing else.
 *  9. Time is CLOCK_MONOTONIC in nanoseconds (vDSO, no syscall), shared by every
 *     process of the host; durations stored in the segment are clamped to
 *     FI_MAX_SPAN_NS so that "now + duration" never overflows. Tests may set a
 *     fixed clock in the header (test_clock_ns); production never does.
 */
#ifndef FASTINFER_ATOMICS_H
#define FASTINFER_ATOMICS_H

#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define FI_CACHELINE   64
#define FI_ALIGNED     __attribute__((aligned(FI_CACHELINE)))

/* ============================================================== constants
 * The values mirror fastinfer/_core/constants.py (shm.pyx checks at import). */
#define FI_CRITICAL    0
#define FI_HIGH        1
#define FI_NORMAL      2
#define FI_BACKGROUND  3
#define FI_N_PRIORITIES 4

#define FI_GRANTED_NOW (-2)
#define FI_QUEUE_FULL  (-1)
#define FI_TICKET_BITS 24
#define FI_TICKET_MASK ((1LL << FI_TICKET_BITS) - 1)

#define FI_CLOSED      0          /* Breaker.state */
#define FI_OPEN        1
#define FI_HALF_OPEN   2
#define FI_ALLOWED     0          /* Breaker.check() */
#define FI_REJECTED    1
#define FI_PROBE       2

#define FI_SESSION_NONE    0      /* backend session states */
#define FI_SESSION_OPENING 1
#define FI_SESSION_OPEN    2
#define FI_SESSION_CLOSING 3

#define FI_ROUND_ROBIN  0         /* routing policies */
#define FI_LEAST_LOADED 1
#define FI_POWER_OF_TWO 2
#define FI_LATENCY      3
#define FI_NO_REPLICA   (-1)
#define FI_EWMA_ALPHA   0.2       /* weight of a new latency sample */

#define FI_N_LEASES     8
#define FI_MAX_WORKERS  4096
#define FI_MAX_REPLICAS 64
#define FI_MAX_POOL     ((1LL << 24) - 1)
#define FI_MAX_SPAN_NS  (1LL << 60)
#define FI_SPEND_BITS   48
#define FI_MAX_SPEND    ((1LL << FI_SPEND_BITS) - 1)
#define FI_MAX_PERIOD   ((1LL << (64 - FI_SPEND_BITS)) - 1)
#define FI_SESSION_STRIPE 64
#define FI_PREFIX_WAYS  8

/* -------------------------------------------------- internal (C only) */
#define FI_E_FREE    0            /* admission queue entry states */
#define FI_E_WAITING 1
#define FI_E_GRANTED 2

#define FI_WAIT_ONE  (1LL << 32)  /* one waiter in the admission word */
#define FI_LOW_MASK  0xFFFFFFFFLL /* in-flight half of the admission word */

#define FI_BRK_BITS  2            /* breaker word: (open_until_ns << 2) | state bits */
#define FI_BRK_MASK  3LL
#define FI_BRK_OPEN  1LL          /* the only state bit stored; half-open = open and due */
#define FI_BRK_MAX_UNTIL (INT64_MAX >> FI_BRK_BITS)   /* open_until beyond it is clamped */

#define FI_LEASE_BITS 13          /* lease word: (expires_ms << 13) | (worker + 1) */
#define FI_LEASE_MASK ((1LL << FI_LEASE_BITS) - 1)

#define FI_SLOT_EMPTY   0         /* session slot states: never used (ends a probe) */
#define FI_SLOT_LIVE    1         /* a binding */
#define FI_SLOT_TOMB    2         /* removed (a probe continues past it) */
#define FI_SLOT_WRITING 3         /* being filled: a crash here leaves it for repair */

#define FI_SEQ_LOCKED   1LL       /* prefix entry sequence word: bit 0 set = being written */
#define FI_SEQ_OWNER_SHIFT 1      /* bits 1..13: writer worker + 1 */
#define FI_SEQ_SHIFT    14        /* bits 14..: sequence */

#define FI_SUM_CLAMP 9.0e18       /* |histogram sum increment| cap, ns */

/* ================================================================ atomics */
static inline int64_t fi_load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int64_t fi_load_relaxed(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void fi_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void fi_store_relaxed(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline int fi_cas(int64_t *p, int64_t *expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
}
static inline int64_t fi_fetch_add(int64_t *p, int64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t fi_fetch_or(int64_t *p, int64_t v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t fi_fetch_and(int64_t *p, int64_t v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t fi_xchg(int64_t *p, int64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline void fi_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline int fi_popcount(uint64_t x) { return __builtin_popcountll(x); }
static inline int fi_ctz(uint64_t x) { return __builtin_ctzll(x); }

/* doubles stored as their bits in an int64 word */
static inline double fi_bits_to_double(int64_t b) { union { int64_t i; double d; } u; u.i = b; return u.d; }
static inline int64_t fi_double_to_bits(double d) { union { int64_t i; double d; } u; u.d = d; return u.i; }

/* ================================================================== clock */
static inline int64_t fi_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* vDSO: no syscall */
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

/* a duration in seconds as ns, clamped to [0, FI_MAX_SPAN_NS]; NaN counts as 0 */
static inline int64_t fi_span_ns(double seconds) {
    double ns = seconds * 1e9 + 0.5;
    if (!(ns > 0.0)) return 0;
    if (ns >= (double)FI_MAX_SPAN_NS) return FI_MAX_SPAN_NS;
    return (int64_t)ns;
}

/* splitmix64's finaliser: spreads a caller's hash over table slots */
static inline uint64_t fi_mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* ================================================================ wake fd
 * Wake a worker: an 8-byte native (little-endian on x86/arm) uint64 1.
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

/* ========================================================== robust mutex */
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

#endif
