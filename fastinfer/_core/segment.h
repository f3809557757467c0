/* fastinfer/_core/segment.h -- the byte layout of the host-wide segment (shm.pyx).
 *
 * Owns: plain C structs, 64-byte aligned so that hot words sit on their own
 * cache lines, and the list of regions. The concurrency rules they follow are
 * at the top of atomics.h; which word is guarded how is said next to it here.
 *
 * Must not touch: anything Python; no code beyond the ABI fingerprint.
 * Bump FI_SHM_VERSION whenever a struct below changes shape.
 *
 * Segment = header
 *         | workers[n_workers]                       fi_worker
 *         | admissions[n_deployments]                fi_admission
 *         | wd[n_workers * n_deployments]            fi_wd (slots held per worker)
 *         | entries (queue entry pools)              fi_entry
 *         | breakers[n_breakers]                     fi_breaker (one per replica)
 *         | probe_owner[n_workers * n_breakers]      int64
 *         | counters[n_counters]                     int64
 *         | bounds[n_buckets]                        double
 *         | histograms (n_histograms * hist_stride)  int64 buckets + sum
 *         | deployments[n_deployments]               fi_deployment
 *         | replicas[n_breakers]                     fi_replica
 *         | replica_held[n_workers * replica_stride] int64
 *         | token_buckets[n_token_buckets]           fi_bucket
 *         | keys[n_keys]                             fi_key
 *         | key_held[n_workers * key_stride]         int64
 *         | leases[n_leases]                         fi_lease
 *         | sessions header                          fi_sessions
 *         | stripes[n_stripes]                       fi_stripe
 *         | session slots[n_stripes * STRIPE]        fi_session
 *         | prefix entries (per deployment)          fi_prefix
 * Every region starts on a 64-byte boundary; offsets live in the header.
 * "Replica" indices are global: deployment d's replicas are
 * deployments[d].replica_base .. + n_replicas - 1 (the same index as its breakers).
 */
#ifndef FASTINFER_SEGMENT_H
#define FASTINFER_SEGMENT_H

#include <stddef.h>
#include "atomics.h"

#define FI_SHM_MAGIC   0x314d4853464e4946ULL   /* "FINFSHM1" little-endian */
#define FI_SHM_VERSION 2

typedef struct {
    uint64_t magic;             /* written last by create (release store) */
    int64_t version;
    int64_t abi;                /* sizes of the structs below, folded */
    int64_t total_size;
    int64_t n_workers, n_deployments, n_counters, n_histograms, n_buckets, n_breakers;
    int64_t off_workers, off_adm, off_wd, off_entries, off_breakers, off_probe_owner;
    int64_t off_counters, off_bounds, off_hist, hist_stride;
    int64_t off_deployments, off_replicas, off_replica_held, replica_stride;
    int64_t n_token_buckets, off_token_buckets;
    int64_t n_keys, off_keys, off_key_held, key_stride;
    int64_t n_leases, off_leases;
    int64_t max_sessions, n_stripes, off_sessions_hdr, off_stripes, off_sessions;
    int64_t prefix_total, off_prefix;
    int64_t test_clock_ns FI_ALIGNED;   /* 0: CLOCK_MONOTONIC. Tests only; its own line */
} FI_ALIGNED fi_header;

typedef struct {
    int64_t pid;
    int64_t wake_fd;            /* -1: none */
    int64_t registered;
} FI_ALIGNED fi_worker;

/* ------------------------------------------------------------ admission */
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
    int64_t dirty;              /* 1: rebuild from the entry states before use (rule 7) */
    int64_t next_seq;           /* host-wide arrival sequence */
    int64_t free_head;          /* singly linked through entry.next */
    /* entries [fresh, pool_size) were never used: still the zero-filled pages of the new segment
     * (state FREE), on no list, not resident until a burst reaches them; taken after free_head's */
    int64_t fresh;
    int64_t head[FI_N_PRIORITIES];
    int64_t tail[FI_N_PRIORITIES];
    int64_t n_by_prio[FI_N_PRIORITIES];   /* read without the lock (atomic loads) */
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

/* ------------------------------------------------------------- breakers */
typedef struct {
    /* line 0: read on every check(): state word + config */
    int64_t word FI_ALIGNED;    /* (open_until_ns << FI_BRK_BITS) | FI_BRK_OPEN, or 0 closed */
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

/* ---------------------------------------------------------- deployments */
typedef struct {
    /* line 0: read-only configuration (the Layout's, stored so attach can rebuild it) */
    int64_t n_replicas;
    int64_t replica_base;       /* global index of replica 0 (= its breaker index) */
    int64_t brk_threshold, brk_probes;
    double brk_open_s, brk_max_open_s;
    int64_t prefix_capacity;    /* entries asked for; the table holds prefix_sets * WAYS */
    int64_t prefix_sets;
    int64_t off_prefix;         /* line 1: byte offset of its prefix entries */
    /* line 2: host-wide round-robin counter, one fetch_add per pick */
    int64_t rr FI_ALIGNED;
    /* line 3: replicas marked unhealthy by the health prober (bit per replica) */
    int64_t unhealthy FI_ALIGNED;
} fi_deployment;

typedef struct {                /* per (deployment, replica): load for routing */
    int64_t in_flight FI_ALIGNED;   /* requests started and not finished, host-wide */
    int64_t ewma_ns;            /* latency EWMA in ns; 0 = no sample yet */
    int64_t weight;             /* configuration */
} fi_replica;

/* ---------------------------------------------------- rate limits, keys */
typedef struct {                /* token bucket as GCRA: one CAS per take */
    int64_t tat FI_ALIGNED;     /* theoretical arrival time, ns: full when tat <= now */
    int64_t consumed;           /* tokens taken + charged - refunded (for carrying a drain) */
    double interval_ns;         /* ns of refill per token = 60e9 / per_minute (config) */
    int64_t tau_ns;             /* burst * interval_ns: how far tat may run ahead of now */
    int64_t burst;              /* capacity in tokens (config) */
    double per_minute;          /* refill rate as configured */
    int64_t remote;             /* tokens charged for other hosts (cluster sync); not in consumed */
} fi_bucket;

typedef struct {                /* per gateway key */
    int64_t in_flight FI_ALIGNED;   /* requests of this key in flight, host-wide */
    int64_t limit;              /* max_concurrency; 0 = not limited (still counted) */
    int64_t spend;              /* (period << FI_SPEND_BITS) | micro-USD, as uint64 */
} fi_key;

typedef struct {
    int64_t word FI_ALIGNED;    /* (expires_ms << FI_LEASE_BITS) | (worker + 1); 0 = free */
} fi_lease;

/* -------------------------------------------------------- session table */
typedef struct {
    int64_t cursor FI_ALIGNED;  /* next stripe the reaper's expire() scans */
} fi_sessions;

typedef struct {                /* one robust mutex per SESSION_STRIPE slots */
    pthread_mutex_t mutex;
    int64_t dirty;              /* 1: recount / fix WRITING slots before use (rule 7) */
    int64_t live;               /* LIVE slots (written under the mutex, read atomically) */
    int64_t evictions;          /* live bindings displaced because the stripe was full */
} FI_ALIGNED fi_stripe;

typedef struct {                /* a binding; every field guarded by its stripe's mutex */
    int64_t state;              /* FI_SLOT_*; written last when a slot is filled */
    uint64_t key_hi, key_lo;    /* the caller's 128-bit session key */
    int64_t last_use_ns;
    int64_t ttl_ns;
    int32_t deployment, replica;
    int32_t backend_state, backend_replica;   /* FI_SESSION_*, replica it is open on or -1 */
} FI_ALIGNED fi_session;

/* --------------------------------------------------------- prefix index */
typedef struct {                /* rule 6: seqlocked; mask 0 = empty */
    int64_t seq;
    int64_t hash;               /* the caller's block-chain hash (uint64 bits) */
    int64_t mask;               /* replicas that served it, bit per replica */
    int64_t last_use_ns;
} fi_prefix;

/* hot words own their cache lines */
_Static_assert(offsetof(fi_admission, word) == 0, "admission word at line 0");
_Static_assert(offsetof(fi_admission, max_concurrency) == FI_CACHELINE, "admission config on line 1");
_Static_assert(offsetof(fi_admission, mutex) % FI_CACHELINE == 0, "admission lock on its own line");
_Static_assert(offsetof(fi_breaker, failures) == FI_CACHELINE, "breaker counters on line 1");
_Static_assert(sizeof(fi_entry) == FI_CACHELINE, "one queue entry per line");
_Static_assert(sizeof(fi_wd) == FI_CACHELINE && sizeof(fi_worker) == FI_CACHELINE, "per-worker lines");
_Static_assert(sizeof(fi_bucket) == FI_CACHELINE && sizeof(fi_key) == FI_CACHELINE, "one line per bucket, per key");
_Static_assert(sizeof(fi_replica) == FI_CACHELINE && sizeof(fi_lease) == FI_CACHELINE, "one line per replica, lease");
_Static_assert(offsetof(fi_deployment, rr) % FI_CACHELINE == 0 && offsetof(fi_deployment, unhealthy) % FI_CACHELINE == 0,
               "round-robin counter and health mask on lines of their own");
_Static_assert(sizeof(fi_session) == FI_CACHELINE, "one session slot per line");
_Static_assert(sizeof(fi_prefix) * 2 == FI_CACHELINE, "two prefix entries per line");
_Static_assert(offsetof(fi_header, test_clock_ns) % FI_CACHELINE == 0, "test clock on its own line");

static inline int64_t fi_abi(void) {
    int64_t a = (int64_t)sizeof(fi_header) ^ ((int64_t)sizeof(fi_worker) << 8)
         ^ ((int64_t)sizeof(fi_admission) << 16) ^ ((int64_t)sizeof(fi_entry) << 28)
         ^ ((int64_t)sizeof(fi_wd) << 36) ^ ((int64_t)sizeof(fi_breaker) << 44)
         ^ ((int64_t)sizeof(pthread_mutex_t) << 54);
    a = a * 31 + (int64_t)sizeof(fi_deployment) + ((int64_t)sizeof(fi_stripe) << 12)
         + ((int64_t)sizeof(fi_sessions) << 24) + ((int64_t)sizeof(fi_prefix) << 36);
    return a;
}

#endif
