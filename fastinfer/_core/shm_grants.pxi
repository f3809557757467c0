# Grants (included by shm.pyx): what one request takes from the limits and gives back once.
#
# A keyed request holds one of its key's concurrency slots and takes one request and its estimated
# tokens from the key's bucket pair and from each deployment's it is sent to; when it ends every
# tokens bucket is corrected to what the upstream reported. These were a dozen Python calls a
# request; here a grant keeps what it took in C fields and reaches this module's BucketPair and
# KeyConcurrency without a method call. Nothing here lives in the segment: a grant is one worker's
# and one request's. The reference is ``ref/grants.py``; ``limits.quota`` words the errors.


cdef class LimitDraw:
    """One key's or deployment's limits as a request draws on them: ``pair`` (taken and corrected:
    this segment's ``BucketPair``, or a store's pair with its API), ``levels`` (the segment's pair
    the ``x-ratelimit-*`` headers read) and, for a key, its concurrency ``slot``; for a deployment
    whose requests wait for its rate limit, its rate queue's ``gate`` (an ``Admission``: taken from
    only while nobody holds or waits in it). A key without a rate limit has neither pair (None)."""
    cdef readonly object pair, levels, slot, gate
    cdef readonly bint has_tokens
    cdef BucketPair _local          # pair when it is this module's: taken without a method call
    cdef KeyConcurrency _slot       # slot when it is this module's
    cdef Admission _gate            # gate when it is this module's

    def __init__(self, pair, levels, slot=None, gate=None):
        if (pair is None) != (levels is None):
            raise ValueError("a draw has both its pair and its levels, or neither")
        if levels is not None and type(levels) is not BucketPair:
            raise TypeError(f"levels: expected a BucketPair, got {type(levels).__name__}")
        self.pair = pair
        self.levels = levels
        self.slot = slot
        self.has_tokens = pair is not None and bool(pair.has_tokens)
        self._local = pair if type(pair) is BucketPair else None
        self._slot = slot if type(slot) is KeyConcurrency else None
        self.gate = gate
        self._gate = gate if type(gate) is Admission else None


cdef double _draw_take(LimitDraw draw, int64_t tokens) except -2.0:
    """-1.0 when the draw's pair gave one request and ``tokens``, else the seconds until they fit."""
    if draw._local is not None:
        return _pair_take(draw._local, tokens)
    ok, wait = draw.pair.take(tokens)
    return -1.0 if ok else wait


cdef int _draw_adjust(LimitDraw draw, int64_t delta) except -1:
    if draw._local is not None:
        return _pair_adjust(draw._local, delta)
    draw.pair.adjust(delta)
    return 0


cdef bint _gate_idle(LimitDraw dep) except -1:
    """Nobody holds or waits in the deployment's rate queue (this segment's: one atomic load)."""
    cdef Admission gate = dep._gate
    if gate is not None and gate.seg.base != NULL:
        return fi_load(&gate.a.word) == 0
    return dep.gate.counts() == (0, 0)


cdef class Ledger:
    """This worker's side of the grants: each deployment's draw by index (``deployments``; None
    where a deployment has no rate limit), the worker's index (whose slots a key's concurrency
    counts), ``estimate(body)`` (a request's tokens at admission), and ``add_spend(key, cost_usd)``,
    what a key's cost is handed to when a request that cost something ends (its tokens and cost are
    counted into the key's ``series``)."""
    cdef readonly int64_t worker
    cdef readonly object estimate, add_spend
    cdef public list deployments

    def __init__(self, int64_t worker, estimate, add_spend):
        self.worker = worker
        self.estimate = estimate
        self.add_spend = add_spend
        self.deployments = []

    def draw(self, pair, levels, slot=None, gate=None):
        """A key's or deployment's ``LimitDraw`` (see there)."""
        return LimitDraw(pair, levels, slot, gate)

    def grant(self, key, req):
        """A new request's grant (nothing taken yet). ``key``: its key's limits (an object with a
        ``draw``, a ``name`` and a ``series``: its ``RequestSeries``, or None: its usage is not counted)
        or None; ``req``: its request (``body`` read for the estimate,
        ``usage`` and ``cost_usd`` when it is settled)."""
        return self._grant(key, req)

    cdef Grant _grant(self, key, req):
        cdef Grant grant = Grant.__new__(Grant)
        grant.ledger = self
        grant.key = key
        grant.req = req
        grant._key = key.draw if key is not None else None
        grant._key_tokens = -1
        grant._tokens = -1
        return grant

    def admit(self, key, req):
        """A new request's grant with its key's limits taken (``grant`` and then its key's
        ``acquire_slot`` and ``take_key``, in one call): ``refusal`` says what was short, None when
        nothing was (or there is no key): ``"key_concurrency"`` (no slot), ``"key_rate_limited"``
        (the pair; ``wait``: the seconds until it fits, inf: never; the slot is given back). A store
        that raises gives the slot back before the error goes on."""
        cdef Grant grant = self._grant(key, req)     # the C method: a def one on self is a Python call
        if key is None:
            return grant
        if not grant._acquire_slot():
            grant.refusal = "key_concurrency"
            return grant
        cdef double wait
        try:
            wait = grant._take_key()
        except BaseException:
            grant._release()
            raise
        if wait >= 0.0:
            grant._release()
            grant.refusal = "key_rate_limited"
            grant.wait = wait
        return grant


cdef class Grant:
    """What one request took from the limits, given back or corrected exactly once (``settle``).
    Made by ``Ledger.grant``."""
    cdef readonly Ledger ledger
    cdef readonly object key, req
    cdef LimitDraw _key
    cdef readonly bint key_slot, settled
    # what ``Ledger.admit`` found short (None: nothing) and, for the key's pair, the seconds until it fits
    cdef public object refusal     # read-only from Python all the same (``fi_readonly_slots``, shm.pyx)
    cdef readonly double wait
    cdef int64_t _key_tokens, _tokens
    # (LimitDraw, tokens charged; -1: it refused) of each deployment whose limits applied, in order;
    # None until one did (a keyed request to a deployment without a rate limit allocates none)
    cdef list _seen

    def __init__(self):
        raise TypeError("a Grant is made by Ledger.grant")

    @property
    def tokens(self):
        """The request's estimated tokens (computed once, only when a tokens bucket needs it)."""
        return self._estimated()

    cdef int64_t _estimated(self) except -1:
        if self._tokens < 0:
            self._tokens = self.ledger.estimate(self.req.body)
        return self._tokens

    @property
    def key_tokens(self):
        return self._key_tokens if self._key_tokens >= 0 else None

    @property
    def seen(self):
        """Each deployment whose limits applied, in order, and the tokens charged to it (-1: refused)."""
        return list(self._seen or ())

    def acquire_slot(self):
        """One of the key's concurrency slots (every keyed request holds one; a key without
        ``max_concurrency`` only counts them); False when the key is at its limit."""
        return self._acquire_slot()

    cdef bint _acquire_slot(self) except -1:
        cdef LimitDraw draw = self._keyed()
        cdef bint ok
        if draw._slot is not None:
            ok = _slot_acquire(draw._slot, self.ledger.worker)
        else:
            ok = draw.slot.try_acquire(self.ledger.worker)
        if ok:
            self.key_slot = True
        return ok

    def key_amount(self):
        """What the key's pair is asked for besides the request: its estimate, or 0 without a tokens bucket."""
        return self._estimated() if self._keyed().has_tokens else 0

    def take_key(self):
        """Take the request and its tokens from the key's pair: None when taken (or the key has no
        rate limit), else the seconds until they fit (inf: never). All or none."""
        cdef double wait = self._take_key()
        return wait if wait >= 0.0 else None

    cdef double _take_key(self) except -2.0:
        """-1.0 when taken (or the key has no rate limit), else the seconds until it fits."""
        cdef LimitDraw draw = self._keyed()
        if draw.pair is None:
            return -1.0
        cdef double wait = _draw_take(draw, self._estimated() if draw.has_tokens else 0)
        if wait >= 0.0:
            return wait
        if draw.has_tokens:
            self._key_tokens = self._tokens
        return -1.0

    def key_taken(self):
        """The key's pair was taken (by ``take_key``, or by the caller from a store that must be awaited)."""
        if self._keyed().has_tokens:
            self._key_tokens = self._tokens

    cdef LimitDraw _keyed(self):
        if self._key is None:
            raise ValueError("this grant has no key")
        return self._key

    def amount(self, LimitDraw dep not None):
        """What ``dep``'s pair is asked for besides the request."""
        return self._estimated() if dep.has_tokens else 0

    def take(self, LimitDraw dep not None):
        """Take the request and its tokens from deployment ``dep``'s pair: None when taken (and
        recorded), else the seconds until they fit (nothing recorded)."""
        cdef double wait = self._take(dep)
        return wait if wait >= 0.0 else None

    cdef double _take(self, LimitDraw dep) except -2.0:
        """-1.0 when ``dep``'s pair gave the request and its tokens (recorded), else the seconds until they fit."""
        cdef double wait = _draw_take(dep, self._estimated() if dep.has_tokens else 0)
        if wait < 0.0:
            self._record(dep, self._tokens if dep.has_tokens else 0)
        return wait

    def take_deployment(self, Py_ssize_t index):
        """The common case of a deployment's rate limit, in one call: True when deployment ``index``
        has none (its ``ledger.deployments`` entry is None) or its pair (this segment's, with its
        rate queue idle if it has one: ``gate.counts()`` is (0, 0)) gave the request and its tokens
        (recorded). False when the caller must decide: a store's pair, a queue someone holds or
        waits in, or a short pair (nothing taken: the caller's ``take`` sees the same)."""
        cdef list deployments = self.ledger.deployments
        if <size_t>index >= <size_t>len(deployments):     # (the module does not check bounds)
            raise IndexError("deployment index out of range")
        cdef LimitDraw dep = deployments[index]
        if dep is None:
            return True
        if dep._local is None or (dep.gate is not None and not _gate_idle(dep)):
            return False
        return self._take(dep) < 0.0

    def charged(self, LimitDraw dep not None):
        self._record(dep, self._tokens if dep.has_tokens else 0)

    def refused(self, LimitDraw dep not None):
        self._record(dep, -1)

    cdef int _record(self, LimitDraw dep, int64_t charged) except -1:
        if self._seen is None:
            self._seen = []
        self._seen.append((dep, charged))
        return 0

    def release(self):
        """Give back the key's concurrency slot (once)."""
        self._release()

    cdef int _release(self) except -1:
        if not self.key_slot:
            return 0
        self.key_slot = False
        if self._key._slot is not None:
            return _slot_release(self._key._slot, self.ledger.worker)
        self._key.slot.release(self.ledger.worker)
        return 0

    def settle(self, served=None):
        """The request has ended: correct every tokens bucket to the usage of the deployment that
        served it (``served``, its index; None: nothing was served, every token goes back), hand
        the key's usage on, give back the key's slot. Once; reads ``req.usage`` and ``req.cost_usd``."""
        self._settle(served)

    def settle_answered(self, served):
        """``settle(served)`` and then ``rate_fields()``, in one call: a whole answer's end, whose
        head shows the levels its own usage left."""
        self._settle(served)
        return _rate_fields(self._levels())

    cdef int _settle(self, served) except -1:
        if self.settled:
            return 0
        self.settled = True
        cdef dict usage = None          # ``make_usage``'s: a plain dict, read by C calls
        cdef object cost
        cdef object served_by = None
        cdef int64_t used = 0, charged, prompt = 0, completion = 0
        cdef LimitDraw dep
        if served is not None:
            usage = self.req.usage
            served_by = self.ledger.deployments[served]
        if usage:
            prompt = _tokens(usage, "prompt_tokens")
            completion = _tokens(usage, "completion_tokens")
            used = prompt + completion
        cdef tuple seen
        if self._seen is not None:
            for seen in self._seen:
                dep = <LimitDraw>seen[0]
                charged = seen[1]
                if charged >= 0 and dep.has_tokens:
                    _draw_adjust(dep, (used if dep is served_by else 0) - charged)
        if self.key is None:
            return 0
        if self._key_tokens >= 0:
            _draw_adjust(self._key, used - self._key_tokens)
        cdef object series
        if usage:
            cost = self.req.cost_usd
            if cost:
                self.ledger.add_spend(self.key, cost)
            series = self.key.series
            if type(series) is RequestSeries:
                (<RequestSeries>series)._usage(prompt, completion, _tokens(usage, "cached_tokens"), cost, False)
            elif series is not None:
                series.usage(prompt, completion, _tokens(usage, "cached_tokens"), cost)
        self._release()
        return 0

    def rate_headers(self):
        """OpenAI's ``x-ratelimit-*`` headers: per kind, from the limit with the least left (the
        key's, then each deployment's that applied)."""
        return _rate_headers(self._levels())

    def rate_fields(self):
        """``rate_headers`` encoded for an answer's head (``name: value`` CR LF each, in the same
        order): what a served answer carries, written as it is (no dict, no strings)."""
        return _rate_fields(self._levels())

    cdef list _levels(self):
        """The pairs whose levels the headers show: the key's, then each deployment's that applied."""
        cdef list pairs = [self._key.levels] if self._key is not None and self._key.levels is not None else []
        cdef tuple seen
        if self._seen is not None:
            for seen in self._seen:
                pairs.append((<LimitDraw>seen[0]).levels)
        return pairs
