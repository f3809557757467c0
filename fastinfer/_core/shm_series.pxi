# Request series (included by shm.pyx): what one request records, one call per record.
#
# A deployment's series (its answers by code, their duration, the gateway's overhead and the time to
# the first byte; its upstream attempts by replica and outcome; its tokens and cost) and a gateway
# key's (answers by code, tokens and cost) are counter words and histogram slots of the segment. The
# metrics layer resolves which words once; a record here is then a lookup by status and atomic adds,
# where it was a Python method whose each add was another call. Reference: ``ref/series.py``.


cdef class RequestSeries:
    """One deployment's or gateway key's series as the request path records them (``Segment.request_series``
    resolves nothing: it is given the words and slots). A word or slot of -1 is a series it does not have."""
    cdef Counters counters
    cdef Histograms histograms
    cdef dict codes                 # status (int) -> counter word
    cdef int64_t other              # the word of every other status
    cdef int64_t duration, overhead, ttft       # histogram slots
    cdef int64_t tokens_in, tokens_out, tokens_cached, cost, estimated, generation
    cdef dict attempts              # (replica, outcome) -> counter word

    def __init__(self):
        raise TypeError("a RequestSeries is made by Segment.request_series")

    def request(self, status):
        """An answer with ``status``, counted."""
        _count(self.counters, self._code_word(status), 1)

    cdef int64_t _code_word(self, status) except -2:
        word = self.codes.get(status)
        return self.other if word is None else <int64_t>word

    def answered(self, status, double duration_s, overhead_s, ttft_s):
        """An answer: its code, its duration, and (once it reached the engine: not None) the gateway's
        overhead and the time to its first byte. Negative durations are not observed."""
        _count(self.counters, self._code_word(status), 1)
        if self.duration < 0:
            return          # counted, not timed
        if duration_s >= 0:
            _observe(self.histograms, self.duration, duration_s)
        if overhead_s is not None and overhead_s >= 0:
            _observe(self.histograms, self.overhead, overhead_s)
        if ttft_s is not None and ttft_s >= 0:
            _observe(self.histograms, self.ttft, ttft_s)

    def upstream(self, replica, outcome):
        """An attempt on ``replica`` ended with ``outcome`` (nothing for a pair the layout lacks)."""
        word = self.attempts.get((replica, outcome))
        if word is not None:
            _count(self.counters, word, 1)

    def usage(self, int64_t prompt, int64_t completion, int64_t cached, cost_usd, bint estimated=False):
        """An answer's tokens and cost (USD, counted in nano-USD: ``COST_SCALE``); ``estimated``: the upstream
        reported none, the gateway counted them."""
        self._usage(prompt, completion, cached, cost_usd, estimated)

    cdef int _usage(self, int64_t prompt, int64_t completion, int64_t cached, cost_usd, bint estimated) except -1:
        if self.tokens_in < 0:
            return 0        # a series without tokens
        if estimated and self.estimated >= 0:
            _count(self.counters, self.estimated, 1)
        _count(self.counters, self.tokens_in, prompt)
        _count(self.counters, self.tokens_out, completion)
        if cached:
            _count(self.counters, self.tokens_cached, cached)
        if cost_usd:
            _count(self.counters, self.cost, _nano(cost_usd))
        return 0

    def account(self, dict usage, price):
        """An answer's normalized ``usage`` (``prompt_tokens``, ``completion_tokens``,
        ``cached_tokens`` — part of the prompt —, ``usage_estimated``; a missing or falsy count is
        0) counted as ``usage`` counts it, at ``price`` (``limits.prices.Price``: USD per million
        input, output and cached input tokens, the last None for the input's); returns the cost,
        as ``Price.cost_usd`` computes it. One call where the engine read four keys, priced them
        and counted them in three."""
        cdef int64_t prompt = _tokens(usage, "prompt_tokens")
        cdef int64_t completion = _tokens(usage, "completion_tokens")
        cdef int64_t cached = _tokens(usage, "cached_tokens")
        cdef double input_price = <double>price[0]
        cached_price = price[2]
        cost = (((prompt - cached) * input_price
                 + cached * (input_price if cached_price is None else <double>cached_price))
                + completion * <double>price[1]) / 1e6
        # the C method, not ``usage``: a def method called on self is a Python call (~600 instructions)
        self._usage(prompt, completion, cached, cost, bool(usage.get("usage_estimated")))
        return cost

    def session_generation(self):
        """The deployment's host-wide count of session rebuilds asked for."""
        if self.counters.seg.base == NULL:
            _closed()
        if self.generation < 0:
            raise LookupError("this series has no session generation")
        return fi_load(&self.counters.v[self.generation])


cdef inline int _count(Counters counters, int64_t word, int64_t n) except -1:
    if counters.seg.base == NULL:
        _closed()
    fi_fetch_add(&counters.v[word], n)
    return 0


cdef inline int64_t _tokens(dict usage, str key) except? -1:
    """``usage.get(key) or 0`` as a count."""
    value = usage.get(key)
    return value if value else 0


cdef double _COST_SCALE = _constants.COST_SCALE


cdef int64_t _nano(cost_usd) except? -1:
    """``round(cost_usd * COST_SCALE)``: half to even, as Python's ``round``."""
    cdef double scaled = (<double>cost_usd) * _COST_SCALE
    if not isfinite(scaled) or fabs(scaled) >= 9.2e18:
        return round(scaled)    # Python's error (NaN, an infinity) or its int
    return <int64_t>rint(scaled)


cdef RequestSeries _bind_series(Segment seg, dict codes, int64_t other, tuple timed, tuple tokens,
                                int64_t cost, int64_t estimated, int64_t generation, dict attempts):
    cdef RequestSeries series = RequestSeries.__new__(RequestSeries)
    cdef int64_t n_counters = seg.hdr.n_counters, n_histograms = seg.hdr.n_histograms
    for word in list(codes.values()) + [other, cost, estimated, generation] + list(tokens) + list(attempts.values()):
        if word is None or not -1 <= word < n_counters:
            raise IndexError("counter index out of range")
    for slot in timed:
        if not -1 <= slot < n_histograms:
            raise IndexError("histogram index out of range")
    if other < 0:
        raise ValueError("a series counts every status: other is a counter word")
    if len(timed) != 3 or len(tokens) != 3:
        raise ValueError("timed is (duration, overhead, ttft), tokens (input, output, cached)")
    if (timed[0] < 0) != (timed[1] < 0) or (timed[0] < 0) != (timed[2] < 0):
        raise ValueError("a series is timed by its three histograms, or not at all")
    if (tokens[0] < 0) != (cost < 0) or any((t < 0) != (tokens[0] < 0) for t in tokens):
        raise ValueError("a series counts its three token directions and its cost, or none")
    series.counters = seg.counters
    series.histograms = seg.histograms
    series.codes = {int(status): int(word) for status, word in codes.items()}
    series.other = other
    series.duration, series.overhead, series.ttft = timed
    series.tokens_in, series.tokens_out, series.tokens_cached = tokens
    series.cost = cost
    series.estimated = estimated
    series.generation = generation
    series.attempts = dict(attempts)
    return series
