# Rate limits (included by shm.pyx): token buckets as GCRA.
#
# A bucket's whole state is one word, the theoretical arrival time (tat, ns):
# the bucket is full when tat <= now and holds (tau - (tat - now)) / interval
# tokens otherwise, negative when in debt. take/refund/charge are one CAS on it,
# lock-free and exact across processes: a CAS that loses re-reads tat and
# decides again. A process whose clock read is a little older than another's
# acts as if it ran at that earlier time: it sees less refill, so it can only
# refuse more, never admit more than the bucket held.

cdef inline int64_t _bucket_cost(fi_bucket *b, double n) noexcept:
    """ns of refill that ``n`` tokens are worth, clamped to FI_MAX_SPAN_NS."""
    cdef double c = n * b.interval_ns + 0.5
    if not (c > 0.0):
        return 0
    if c >= <double>FI_MAX_SPAN_NS:
        return FI_MAX_SPAN_NS
    return <int64_t>c


cdef inline bint _bucket_take(fi_bucket *b, int64_t n, int64_t now) noexcept:
    cdef int64_t c = _bucket_cost(b, <double>n), t = fi_load(&b.tat), new
    while True:
        new = (t if t > now else now) + c
        if new - now > b.tau_ns:
            return False
        if fi_cas(&b.tat, &t, new):
            break
    fi_fetch_add(&b.consumed, n)
    return True


cdef inline void _bucket_refill(fi_bucket *b, int64_t n, int64_t now) noexcept:
    """Give ``n`` tokens' worth of refill back (never fuller than full); counts nothing."""
    cdef int64_t c = _bucket_cost(b, <double>n), t = fi_load(&b.tat), new
    while True:
        new = t - c
        if new < now:               # never fuller than full
            new = now
        if fi_cas(&b.tat, &t, new):
            break


cdef inline void _bucket_refund(fi_bucket *b, int64_t n, int64_t now) noexcept:
    _bucket_refill(b, n, now)
    fi_fetch_add(&b.consumed, -n)


cdef inline void _bucket_refund_remote(fi_bucket *b, int64_t n, int64_t now) noexcept:
    cdef int64_t r = fi_load(&b.remote)
    _bucket_refill(b, n, now)
    while not fi_cas(&b.remote, &r, r - n if r > n else 0):
        pass


cdef inline void _bucket_charge(fi_bucket *b, int64_t n, int64_t now) noexcept:
    """Take ``n`` without checking (debt allowed, bounded so tat cannot overflow)."""
    cdef int64_t c = _bucket_cost(b, <double>n), t = fi_load(&b.tat), new
    while True:
        new = min((t if t > now else now) + c, now + b.tau_ns + FI_MAX_SPAN_NS)
        if fi_cas(&b.tat, &t, new):
            break


cdef inline double _bucket_wait_s(fi_bucket *b, int64_t n, int64_t now) noexcept:
    cdef int64_t c = _bucket_cost(b, <double>n), t = fi_load(&b.tat), late
    if c > b.tau_ns:
        return float("inf")
    late = (t if t > now else now) + c - now - b.tau_ns
    return late / 1e9 if late > 0 else 0.0


cdef void _init_bucket(fi_bucket *b, double per_minute, int64_t burst) noexcept:
    b.tat = 0
    b.consumed = 0
    b.remote = 0
    b.per_minute = per_minute
    b.burst = burst
    b.interval_ns = 60e9 / per_minute
    b.tau_ns = _bucket_cost(b, <double>burst)


cdef TokenBucket _bind_bucket(Segment seg, int64_t i):
    cdef TokenBucket tb = TokenBucket.__new__(TokenBucket)
    tb.seg = seg
    tb.hdr = seg.hdr
    tb.b = <fi_bucket *>(seg.base + seg.hdr.off_token_buckets) + i
    tb.capacity = tb.b.burst
    tb.per_minute = tb.b.per_minute
    return tb


cdef class TokenBucket:
    """A token bucket shared by every process of the host (GCRA, lock-free).

    Capacity ``capacity`` (the burst) tokens, refilled continuously at ``per_minute / 60``
    tokens per second; it starts full. ``take`` admits only what the bucket holds;
    ``charge`` takes without asking and may leave the bucket in debt (a negative level,
    repaid by the refill); ``refund`` gives tokens back (never above capacity).
    Amounts are whole tokens (requests or LLM tokens), >= 0.
    """
    cdef Segment seg
    cdef fi_header *hdr
    cdef fi_bucket *b
    cdef readonly int64_t capacity      # the burst: most tokens the bucket holds
    cdef readonly double per_minute     # refill rate as configured

    def take(self, int64_t n=1):
        """Take ``n`` tokens if the bucket holds at least ``n`` now; True when taken."""
        if self.seg.base == NULL:
            _closed()
        if n < 0:
            raise ValueError("token amounts must be >= 0")
        return _bucket_take(self.b, n, _now(self.hdr))

    def refund(self, int64_t n):
        """Give back ``n`` tokens taken or charged earlier (the bucket never exceeds capacity)."""
        if self.seg.base == NULL:
            _closed()
        if n < 0:
            raise ValueError("token amounts must be >= 0")
        _bucket_refund(self.b, n, _now(self.hdr))

    def charge(self, int64_t n):
        """Take ``n`` tokens without checking: may go below zero (debt). For corrections
        (a request's real token usage) and tokens other hosts spent."""
        if self.seg.base == NULL:
            _closed()
        if n < 0:
            raise ValueError("token amounts must be >= 0")
        _bucket_charge(self.b, n, _now(self.hdr))
        fi_fetch_add(&self.b.consumed, n)

    def charge_remote(self, int64_t n):
        """``charge`` for tokens other hosts used (a cluster sync adding what it read): counted in
        ``remote``, not in ``consumed``, so ``consumed`` stays this host's own use to publish."""
        if self.seg.base == NULL:
            _closed()
        if n < 0:
            raise ValueError("token amounts must be >= 0")
        _bucket_charge(self.b, n, _now(self.hdr))
        fi_fetch_add(&self.b.remote, n)

    def refund_remote(self, int64_t n):
        """Give back ``n`` tokens charged with ``charge_remote`` (another host's use corrected
        down, or a share assumed while Redis was away): the bucket refills as with ``refund``
        (never above capacity) and ``remote`` drops by ``n``, but never below 0 (a refund of
        use charged to an earlier segment, before a reload, still refills the bucket)."""
        if self.seg.base == NULL:
            _closed()
        if n < 0:
            raise ValueError("token amounts must be >= 0")
        _bucket_refund_remote(self.b, n, _now(self.hdr))

    def available(self):
        """Tokens in the bucket now (a float: it refills continuously); negative in debt."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t now = _now(self.hdr), t = fi_load(&self.b.tat)
        return (self.b.tau_ns - ((t if t > now else now) - now)) / self.b.interval_ns

    def wait_s(self, int64_t n=1):
        """Seconds until ``take(n)`` could succeed (0.0: now); inf when ``n > capacity``."""
        if self.seg.base == NULL:
            _closed()
        if n < 0:
            raise ValueError("token amounts must be >= 0")
        return _bucket_wait_s(self.b, n, _now(self.hdr))

    def set_available(self, double tokens):
        """Import a level exported by ``available()`` (persistence, reload): the bucket
        holds ``tokens`` now, at most its capacity; negative means debt."""
        if self.seg.base == NULL:
            _closed()
        if tokens != tokens:
            raise ValueError("tokens must be a number")
        if tokens > self.capacity:
            tokens = self.capacity
        cdef int64_t behind = _bucket_cost(self.b, self.b.burst - tokens)
        fi_store(&self.b.tat, _now(self.hdr) + min(behind, self.b.tau_ns + FI_MAX_SPAN_NS))

    @property
    def rate_per_s(self):
        """Refill rate, tokens per second."""
        return self.per_minute / 60.0

    @property
    def consumed(self):
        """Tokens taken and charged minus those refunded since creation (for carrying what a
        draining generation spent into its successor's bucket)."""
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.b.consumed)

    @property
    def remote(self):
        """Tokens charged with ``charge_remote`` since creation (what other hosts used here)."""
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.b.remote)


def _take_all(Segment seg, ids, amounts):
    """Segment.take_all's body (see there)."""
    if seg.base == NULL:
        _closed()
    cdef Py_ssize_t m = len(ids), k, j
    cdef int64_t nb = seg.hdr.n_token_buckets, i, n, now
    cdef double wait = 0.0, w
    cdef fi_bucket *base = <fi_bucket *>(seg.base + seg.hdr.off_token_buckets)
    if len(amounts) != m:
        raise ValueError("take_all: one amount per bucket id")
    for k in range(m):
        if <uint64_t>(<int64_t>ids[k]) >= <uint64_t>nb:
            raise IndexError("token bucket index out of range")
        if <int64_t>amounts[k] < 0:
            raise ValueError("token amounts must be >= 0")
    now = _now(seg.hdr)
    for k in range(m):
        if not _bucket_take(base + <int64_t>ids[k], <int64_t>amounts[k], now):
            for j in range(k - 1, -1, -1):           # all or none: give back what was taken
                _bucket_refund(base + <int64_t>ids[j], <int64_t>amounts[j], now)
            for j in range(m):                        # a bucket named twice needs both amounts
                i = <int64_t>ids[j]
                n = 0
                for k in range(m):
                    if <int64_t>ids[k] == i:
                        n += <int64_t>amounts[k]
                w = _bucket_wait_s(base + i, n, now)
                if w > wait:
                    wait = w
            return False, wait
    return True, 0.0



# ---------------------------------------------------------------- a request's draw on one limit
# A key's or a deployment's rate limit is up to two buckets (rpm: requests, tpm: tokens); every
# request takes one of the first and its estimate from the second, all or none, and corrects the
# second when it ends. A pair does that in one call, without the lists take_all reads.

_TAKEN = (True, 0.0)


cdef BucketPair _bind_pair(Segment seg, int64_t requests, int64_t tokens):
    cdef fi_bucket *base = <fi_bucket *>(seg.base + seg.hdr.off_token_buckets)
    cdef BucketPair pair = BucketPair.__new__(BucketPair)
    pair.seg = seg
    pair.req = base + requests if requests >= 0 else NULL
    pair.tok = base + tokens if tokens >= 0 else NULL
    pair.has_requests = requests >= 0
    pair.has_tokens = tokens >= 0
    return pair


cdef class BucketPair:
    """One limit's requests and tokens buckets (either may be absent: -1 to ``Segment.bucket_pair``),
    as one request draws on them: ``take`` one request and its tokens, ``adjust`` the tokens when
    the real usage is known. The same as ``take_all([requests, tokens], [1, n])`` and the tokens
    bucket's ``charge`` / ``refund``, in one call each."""
    cdef Segment seg
    cdef fi_bucket *req
    cdef fi_bucket *tok
    cdef readonly bint has_requests, has_tokens

    def take(self, int64_t tokens):
        """One request and ``tokens`` tokens, or neither: ``(True, 0.0)``, or ``(False, seconds
        until both fit)`` (inf when ``tokens`` is more than the tokens bucket ever holds)."""
        cdef double wait = _pair_take(self, tokens)
        return _TAKEN if wait < 0.0 else (False, wait)

    def adjust(self, int64_t delta):
        """Correct the tokens bucket after the fact: ``delta`` > 0 more was used (it may go into
        debt), < 0 less (never fuller than full). Nothing without a tokens bucket."""
        _pair_adjust(self, delta)


cdef double _pair_take(BucketPair pair, int64_t tokens) except -2.0:
    """``BucketPair.take`` for C callers: -1.0 when taken, else the seconds until both fit."""
    if pair.seg.base == NULL:
        _closed()
    if tokens < 0:
        raise ValueError("token amounts must be >= 0")
    cdef int64_t now = _now(pair.seg.hdr)
    cdef double wait = 0.0, w
    if pair.req != NULL and not _bucket_take(pair.req, 1, now):
        pass
    elif pair.tok != NULL and not _bucket_take(pair.tok, tokens, now):
        if pair.req != NULL:
            _bucket_refund(pair.req, 1, now)
    else:
        return -1.0
    if pair.req != NULL:
        wait = _bucket_wait_s(pair.req, 1, now)
    if pair.tok != NULL:
        w = _bucket_wait_s(pair.tok, tokens, now)
        if w > wait:
            wait = w
    return wait


cdef int _pair_adjust(BucketPair pair, int64_t delta) except -1:
    """``BucketPair.adjust`` for C callers."""
    if pair.seg.base == NULL:
        _closed()
    if pair.tok == NULL or delta == 0:
        return 0
    cdef int64_t now = _now(pair.seg.hdr)
    if delta > 0:
        _bucket_charge(pair.tok, delta, now)
        fi_fetch_add(&pair.tok.consumed, delta)
    else:
        _bucket_refund(pair.tok, -delta, now)
    return 0

cdef inline double _bucket_left(fi_bucket *b, int64_t now) noexcept:
    """Tokens in the bucket now (``TokenBucket.available``)."""
    cdef int64_t t = fi_load(&b.tat)
    return (b.tau_ns - ((t if t > now else now) - now)) / b.interval_ns


cdef enum:
    RATE_VALUE_ROOM = 64        # a decimal of 64 bits, or a reset duration
    RATE_FIELDS_ROOM = 2 * (3 * (32 + 4) + 3 * RATE_VALUE_ROOM)   # both kinds' three fields, at most


cdef int _least_left(pairs, fi_bucket **req, double *req_left, fi_bucket **tok, double *tok_left) except -1:
    """Per kind, the bucket of ``pairs`` with the least left now (the first of equals) and what it
    has left; NULL for a kind no pair has."""
    cdef BucketPair pair
    cdef double left
    cdef int64_t now
    req[0] = tok[0] = NULL
    for item in pairs:
        pair = <BucketPair?>item
        if pair.seg.base == NULL:
            _closed()
        now = _now(pair.seg.hdr)
        if pair.req != NULL:
            left = _bucket_left(pair.req, now)
            if req[0] == NULL or left < req_left[0]:
                req[0], req_left[0] = pair.req, left
        if pair.tok != NULL:
            left = _bucket_left(pair.tok, now)
            if tok[0] == NULL or left < tok_left[0]:
                tok[0], tok_left[0] = pair.tok, left
    return 0


cdef dict _rate_headers(pairs):
    """``Segment.rate_headers``: ``_rate_fields`` as a dict of strings (an error answer's, which
    aiohttp writes), so that the values are formatted in one place."""
    headers = {}
    for line in _rate_fields(pairs).decode("ascii").splitlines():
        name, _, value = line.partition(": ")
        headers[name] = value
    return headers


cdef bytes _rate_fields(pairs):
    """``Segment.rate_fields``: per kind, the least-left bucket's three ``x-ratelimit-*`` fields as
    the answer head's encoded lines (``name: value`` CR LF each): a served answer writes them as
    they are, no dict between."""
    cdef fi_bucket *req
    cdef fi_bucket *tok
    cdef double req_left = 0.0, tok_left = 0.0
    cdef char out[RATE_FIELDS_ROOM]
    cdef char *at = out
    _least_left(pairs, &req, &req_left, &tok, &tok_left)
    if req != NULL:
        at = _put_rate_fields(at, req, req_left, _REQUEST_FIELDS)
    if tok != NULL:
        at = _put_rate_fields(at, tok, tok_left, _TOKEN_FIELDS)
    return out[:at - out]


# each kind's three names, with their ": "
cdef const char *_REQUEST_FIELDS[3]
cdef const char *_TOKEN_FIELDS[3]
_REQUEST_FIELDS[:] = [b"x-ratelimit-limit-requests: ", b"x-ratelimit-remaining-requests: ",
                      b"x-ratelimit-reset-requests: "]
_TOKEN_FIELDS[:] = [b"x-ratelimit-limit-tokens: ", b"x-ratelimit-remaining-tokens: ", b"x-ratelimit-reset-tokens: "]


cdef char *_put_rate_fields(char *at, fi_bucket *b, double left, const char **names) noexcept:
    """One kind's three fields at ``at``: the limit, what is left (all of it when full, as a limit
    that does not bind mostly is: nothing to format) and the wait until it is full again."""
    cdef char capacity[RATE_VALUE_ROOM]
    cdef char text[RATE_VALUE_ROOM]
    cdef int capacity_size = fi_decimal(capacity, b.burst)
    at = _put_field(at, names[0], capacity, capacity_size)
    if left >= b.burst:
        at = _put_field(at, names[1], capacity, capacity_size)
        return _put_field(at, names[2], "0s", 2)
    if left > 0:
        at = _put_field(at, names[1], text, fi_decimal(text, <int64_t>left))
    else:
        at = _put_field(at, names[1], "0", 1)
    return _put_field(at, names[2], text, _reset_text(_refill_s(b, left), text))


cdef inline char *_put_field(char *at, const char *name, const char *value, int size) noexcept:
    cdef size_t n = strlen(name)
    memcpy(at, name, n)
    memcpy(at + n, value, size)
    memcpy(at + n + size, b"\r\n", 2)
    return at + n + size + 2


cdef inline double _refill_s(fi_bucket *b, double left) noexcept:
    """Seconds until a bucket with ``left`` is full again."""
    return (b.burst - left) * (1.0 / (b.per_minute / 60.0))


cdef int _reset_text(double seconds, char *text) noexcept:
    """A wait as OpenAI writes it (the reference's ``reset_duration``), into ``text``
    (``RATE_VALUE_ROOM`` bytes): 20ms, 1s, 1.5s, 6m0s, 1h2m3s. Its size."""
    cdef int n
    cdef long long ms, total, frac
    if not seconds > 0:
        memcpy(text, b"0s", 2)
        return 2
    ms = <long long>ceil(seconds * 1000)
    if ms < 1000:
        n = snprintf(text, RATE_VALUE_ROOM, "%lldms", ms)
    elif ms < 60000:
        frac = ms % 1000
        if frac == 0:
            n = snprintf(text, RATE_VALUE_ROOM, "%llds", ms // 1000)
        elif frac % 100 == 0:
            n = snprintf(text, RATE_VALUE_ROOM, "%lld.%llds", ms // 1000, frac // 100)
        elif frac % 10 == 0:
            n = snprintf(text, RATE_VALUE_ROOM, "%lld.%02llds", ms // 1000, frac // 10)
        else:
            n = snprintf(text, RATE_VALUE_ROOM, "%lld.%03llds", ms // 1000, frac)
    else:
        total = (ms + 999) // 1000
        if total >= 3600:
            n = snprintf(text, RATE_VALUE_ROOM, "%lldh%lldm%llds", total // 3600, total % 3600 // 60, total % 60)
        else:
            n = snprintf(text, RATE_VALUE_ROOM, "%lldm%llds", total // 60, total % 60)
    return n

# ---------------------------------------------------------------- gateway keys
# Per key: requests in flight host-wide (a CAS against max_concurrency, owner-
# tracked per worker for reclaim) and spend in the current budget period, one
# word: (period << FI_SPEND_BITS) | micro-USD, so a new period starts from zero
# in the same CAS that records its first spend.

cdef inline int64_t _spend_word(uint64_t period, int64_t micro) noexcept:
    return <int64_t>((period << FI_SPEND_BITS) | <uint64_t>micro)


cdef inline uint64_t _spend_period(int64_t word) noexcept:
    return (<uint64_t>word) >> FI_SPEND_BITS


cdef inline int64_t _spend_micro(int64_t word) noexcept:
    return word & FI_MAX_SPEND


cdef int _check_period(int64_t period) except -1:
    if <uint64_t>period > <uint64_t>FI_MAX_PERIOD:
        raise ValueError(f"budget period must be in 0..{FI_MAX_PERIOD}")
    return 0


cdef int64_t _reclaim_key_slots(Segment seg, int64_t worker):
    """Give back the key slots ``worker`` held."""
    cdef fi_header *h = seg.hdr
    cdef int64_t *held = <int64_t *>(seg.base + h.off_key_held) + worker * h.key_stride
    cdef int64_t k, n, total = 0
    for k in range(h.n_keys):
        n = fi_xchg(&held[k], 0)
        if n:
            fi_fetch_add(&(<fi_key *>(seg.base + h.off_keys) + k).in_flight, -n)
            total += n
    return total


cdef class KeyConcurrency:
    """Requests of one gateway key in flight on the whole host, against its
    ``max_concurrency`` (``limit``; 0 = not limited, only counted)."""
    cdef Segment seg
    cdef fi_key *k
    cdef int64_t *held          # held[worker * stride]
    cdef int64_t stride, n_workers
    cdef readonly int64_t limit     # max_concurrency; 0 = not limited

    def try_acquire(self, int64_t worker):
        """Count one more request of this key for ``worker``; False (nothing counted) when
        the key already has ``limit`` in flight."""
        return _slot_acquire(self, worker)

    def release(self, int64_t worker):
        """The request ``worker`` counted has ended."""
        _slot_release(self, worker)

    @property
    def in_flight(self):
        if self.seg.base == NULL:
            _closed()
        return fi_load(&self.k.in_flight)

    def held_by(self, int64_t worker):
        _enter(self.seg, worker, self.n_workers)
        return fi_load(&self.held[worker * self.stride])

    def reserve(self, int64_t n):
        """Count ``n`` requests in flight that no worker holds: a reload's previous generation's,
        which end in their own segment, so that the new one admits only what is left of ``limit``."""
        if self.seg.base == NULL:
            _closed()
        fi_fetch_add(&self.k.in_flight, n)
        return n

    def unreserve(self, int64_t n):
        """``n`` of the requests ``reserve`` counted have ended."""
        if self.seg.base == NULL:
            _closed()
        fi_fetch_add(&self.k.in_flight, -n)


cdef bint _slot_acquire(KeyConcurrency kc, int64_t worker) except -1:
    """``KeyConcurrency.try_acquire`` for C callers."""
    _enter(kc.seg, worker, kc.n_workers)
    cdef int64_t limit = kc.limit, v
    if limit == 0:
        fi_fetch_add(&kc.k.in_flight, 1)
    else:
        v = fi_load(&kc.k.in_flight)
        while True:
            if v >= limit:
                return False
            if fi_cas(&kc.k.in_flight, &v, v + 1):
                break
    fi_fetch_add(&kc.held[worker * kc.stride], 1)
    return True


cdef int _slot_release(KeyConcurrency kc, int64_t worker) except -1:
    """``KeyConcurrency.release`` for C callers."""
    _enter(kc.seg, worker, kc.n_workers)
    cdef int64_t *h = &kc.held[worker * kc.stride]
    cdef int64_t n = fi_load(h)
    while True:
        if n <= 0:
            raise RuntimeError(f"worker {worker} holds no slot of this key")
        if fi_cas(h, &n, n - 1):
            break
    fi_fetch_add(&kc.k.in_flight, -1)
    return 0


cdef class KeySpend:
    """What one gateway key spent in its current budget period, in micro-USD, host-wide.

    ``period`` is the caller's id of the calendar period (0..65535, growing with time:
    e.g. days since 1970 for ``day``, 0 for ``total``). The first ``add`` of a later period
    starts it from zero, atomically; an ``add`` naming an earlier period (a request that
    began before midnight) is counted in the current one. Saturates at ~$281M per period.
    """
    cdef Segment seg
    cdef fi_key *k

    def add(self, int64_t period, int64_t micro_usd):
        """Record spend (negative: a correction; the total never goes below 0). Returns the
        period's total after it."""
        if self.seg.base == NULL:
            _closed()
        _check_period(period)
        cdef int64_t w = fi_load(&self.k.spend), base, total
        cdef uint64_t p
        while True:
            p = _spend_period(w)
            if <uint64_t>period > p:
                p = period
                base = 0
            else:
                base = _spend_micro(w)
            if micro_usd > FI_MAX_SPEND - base:
                total = FI_MAX_SPEND
            elif micro_usd < -base:
                total = 0
            else:
                total = base + micro_usd
            if fi_cas(&self.k.spend, &w, _spend_word(p, total)):
                return total

    def spent(self, int64_t period):
        """micro-USD spent in ``period`` (0 when it has not begun, or is over)."""
        if self.seg.base == NULL:
            _closed()
        _check_period(period)
        cdef int64_t w = fi_load(&self.k.spend)
        return _spend_micro(w) if _spend_period(w) == <uint64_t>period else 0

    def export(self):
        """(period, micro_usd) as stored, for persistence and reload."""
        if self.seg.base == NULL:
            _closed()
        cdef int64_t w = fi_load(&self.k.spend)
        return (<int64_t>_spend_period(w), _spend_micro(w))

    def restore(self, int64_t period, int64_t micro_usd):
        """Set what ``export`` gave (at start-up or reload, before requests spend)."""
        if self.seg.base == NULL:
            _closed()
        _check_period(period)
        if not 0 <= micro_usd <= FI_MAX_SPEND:
            raise ValueError(f"micro_usd must be in 0..{FI_MAX_SPEND}")
        fi_store(&self.k.spend, _spend_word(period, micro_usd))


cdef KeyConcurrency _bind_key_concurrency(Segment seg, int64_t i):
    cdef KeyConcurrency kc = KeyConcurrency.__new__(KeyConcurrency)
    kc.seg = seg
    kc.k = <fi_key *>(seg.base + seg.hdr.off_keys) + i
    kc.held = <int64_t *>(seg.base + seg.hdr.off_key_held) + i
    kc.stride = seg.hdr.key_stride
    kc.n_workers = seg.hdr.n_workers
    kc.limit = kc.k.limit
    return kc


cdef KeySpend _bind_key_spend(Segment seg, int64_t i):
    cdef KeySpend ks = KeySpend.__new__(KeySpend)
    ks.seg = seg
    ks.k = <fi_key *>(seg.base + seg.hdr.off_keys) + i
    return ks
