"""A request's grant on the limits (``Ledger``, ``LimitDraw``, ``Grant``): what it takes from its key's
slot and bucket pair and from each deployment's, and how it gives back or corrects it exactly once,
on the compiled core and its reference, and the two against each other on generated sequences."""
import math
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shm_helpers
from shm_helpers import T0, replay

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

# buckets: 0 key requests, 1 key tokens, 2 deployment 0 requests, 3 deployment 0 tokens,
# 4 deployment 1 tokens (a tokens limit only)
BUCKETS = [(60, 5), (6000, 100), (60, 4), (6000, 80), (6000, 60)]


def _layout(impl, key_limit=0):
    return impl.Layout(2, [], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[key_limit])


class Book:
    """A ledger over one segment, with a key and two deployments, recording what it hands on."""

    def __init__(self, seg, worker=0):
        self.seg = seg
        self.estimates = 0
        self.spent: list = []
        self.usage: list = []
        self.ledger = seg.ledger(worker, self._estimate, lambda key, cost: self.spent.append((key.name, cost)))
        key_pair = seg.bucket_pair(0, 1)
        self.key = SimpleNamespace(name="team", draw=self.ledger.draw(key_pair, key_pair, seg.key_concurrency(0)),
                                   series=SimpleNamespace(usage=lambda *a: self.usage.append(a)))
        self.deps = [self.ledger.draw(seg.bucket_pair(2, 3), seg.bucket_pair(2, 3)),
                     self.ledger.draw(seg.bucket_pair(-1, 4), seg.bucket_pair(-1, 4))]
        self.ledger.deployments = [self.deps[0], None, self.deps[1]]     # index 1: no rate limit

    def _estimate(self, body):
        self.estimates += 1
        return body["tokens"]

    def grant(self, tokens=10, keyed=True):
        req = SimpleNamespace(body={"tokens": tokens}, usage=None, cost_usd=0.0)
        return self.ledger.grant(self.key if keyed else None, req), req

    def admit(self, tokens=10, keyed=True):
        req = SimpleNamespace(body={"tokens": tokens}, usage=None, cost_usd=0.0)
        return self.ledger.admit(self.key if keyed else None, req), req

    def levels(self):
        return [round(self.seg.bucket(i).available(), 6) for i in range(len(BUCKETS))]


@pytest.fixture
def book(segments):
    seg = segments(2, [], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[0])
    seg.set_test_clock(T0)
    return Book(seg)


def test_a_keyed_request_takes_a_slot_and_its_estimate_then_is_corrected_to_its_usage(book):
    grant, req = book.grant(tokens=30)
    assert grant.acquire_slot() and grant.key_slot
    assert book.seg.key_concurrency(0).in_flight == 1
    assert grant.take_key() is None and grant.key_tokens == 30
    assert grant.take(book.deps[0]) is None
    assert book.levels() == [4, 70, 3, 50, 60]
    req.usage = {"prompt_tokens": 12, "completion_tokens": 5, "cached_tokens": 2}
    req.cost_usd = 0.25
    grant.settle(0)                                       # served by deployment 0
    assert book.levels() == [4, 83, 3, 63, 60]            # 17 used of the 30 charged
    assert book.seg.key_concurrency(0).in_flight == 0 and not grant.key_slot and grant.settled
    assert book.spent == [("team", 0.25)]
    assert book.usage == [(12, 5, 2, 0.25)]
    grant.settle(0)                                       # once
    assert book.levels() == [4, 83, 3, 63, 60] and len(book.usage) == 1
    assert book.estimates == 1


def test_a_request_nothing_served_gives_back_its_tokens_but_not_its_requests(book):
    grant, req = book.grant(tokens=20)
    grant.acquire_slot()
    grant.take_key()
    grant.take(book.deps[0])
    grant.take(book.deps[1])
    req.usage = {"prompt_tokens": 99, "completion_tokens": 99}    # not read: nothing was served
    grant.settle(None)
    assert book.levels() == [4, 100, 3, 80, 60]
    assert book.usage == [] and book.spent == []
    assert book.seg.key_concurrency(0).in_flight == 0


def test_only_the_deployment_that_served_is_charged_its_usage(book):
    grant, req = book.grant(tokens=20, keyed=False)
    grant.take(book.deps[0])
    grant.take(book.deps[1])
    req.usage = {"prompt_tokens": 7, "completion_tokens": 3}
    grant.settle(2)                                       # deployment index 2 is deps[1]
    assert book.levels() == [5, 100, 3, 80, 50]
    assert book.usage == []                               # no key: nobody to hand the usage to


def test_a_short_pair_takes_nothing_and_says_how_long_to_wait(book):
    grant, _ = book.grant(tokens=101)                     # more than the key's tokens bucket holds
    assert grant.take_key() == math.inf
    assert book.levels() == [5, 100, 4, 80, 60] and grant.key_tokens is None
    grants = [book.grant(tokens=1)[0] for _ in range(5)]
    assert all(g.take_key() is None for g in grants)
    late, _ = book.grant(tokens=1)
    assert late.take_key() == pytest.approx(1.0)          # the sixth request: one second at 60 rpm
    assert book.levels()[0] == 0
    assert late.take(book.deps[1]) is None                # a deployment is its own limit
    short, _ = book.grant(tokens=61)
    assert short.take(book.deps[1]) == math.inf and short.seen == []


def test_a_refused_deployment_is_remembered_but_not_corrected(book):
    grant, _ = book.grant(tokens=10)
    grant.refused(book.deps[0])
    assert grant.seen == [(book.deps[0], -1)]
    grant.settle(None)
    assert book.levels() == [5, 100, 4, 80, 60]


def test_the_key_slot_is_given_back_once_and_refused_at_the_limit(segments):
    seg = segments(2, [], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[1])
    seg.set_test_clock(T0)
    book = Book(seg, worker=1)
    first, _ = book.grant()
    second, _ = book.grant()
    assert first.acquire_slot() and not second.acquire_slot()
    assert seg.key_concurrency(0).held_by(1) == 1
    first.release()
    first.release()
    assert seg.key_concurrency(0).in_flight == 0
    assert second.acquire_slot()
    second.settle(None)
    assert seg.key_concurrency(0).in_flight == 0


def test_admit_takes_the_slot_and_the_keys_pair_or_says_what_was_short(segments):
    seg = segments(2, [], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[2])
    seg.set_test_clock(T0)
    book = Book(seg)
    keyless, _ = book.admit(tokens=30, keyed=False)
    assert keyless.refusal is None and not keyless.key_slot and book.levels() == [5, 100, 4, 80, 60]
    held, _ = book.admit(tokens=30)
    assert held.refusal is None and held.key_slot and held.key_tokens == 30
    assert book.levels()[:2] == [4, 70] and seg.key_concurrency(0).in_flight == 1
    never, _ = book.admit(tokens=101)                     # more than the key's tokens bucket holds
    assert never.refusal == "key_rate_limited" and never.wait == math.inf
    assert not never.key_slot and seg.key_concurrency(0).in_flight == 1 and book.levels()[:2] == [4, 70]
    second, _ = book.admit(tokens=1)
    third, _ = book.admit(tokens=1)                       # two in flight: the key's max_concurrency
    assert third.refusal == "key_concurrency" and not third.key_slot and book.levels()[:2] == [3, 69]
    held.settle(None)
    second.settle(None)
    for _ in range(3):                                    # the third to fifth request this minute
        fits, _ = book.admit(tokens=1)
        assert fits.refusal is None
        fits.settle(None)
    late, _ = book.admit(tokens=1)                         # the sixth request this minute at 60 rpm
    assert late.refusal == "key_rate_limited" and late.wait == pytest.approx(1.0)
    assert seg.key_concurrency(0).in_flight == 0


class _FailingPair:
    """A cluster store's pair whose store is down under fail_closed: taking raises."""
    has_tokens = True

    def take(self, tokens):
        raise ConnectionError("redis is down")


def test_admit_gives_the_slot_back_when_the_store_raises(book):
    book.key = SimpleNamespace(name="team", draw=book.ledger.draw(_FailingPair(), book.seg.bucket_pair(0, 1),
                                                                  book.seg.key_concurrency(0)))
    with pytest.raises(ConnectionError):
        book.admit()
    assert book.seg.key_concurrency(0).in_flight == 0


def test_a_settled_grant_counts_its_keys_tokens_and_cost_into_the_keys_series(segments):
    # words: 0 a code, 1..3 tokens in / out / cached, 4 cost (nano-USD); the compiled grant counts in C
    seg = segments(2, [], 5, 0, (), token_buckets=BUCKETS, key_max_concurrency=[0])
    seg.set_test_clock(T0)
    book = Book(seg)
    book.key.series = seg.request_series({200: 0}, 0, tokens=(1, 2, 3), cost=4)
    grant, req = book.admit(tokens=30)
    req.usage = {"prompt_tokens": 12, "completion_tokens": 5, "cached_tokens": 2}
    req.cost_usd = 0.25
    grant.settle(0)
    unserved, req = book.admit(tokens=30)
    req.usage = {"prompt_tokens": 99, "completion_tokens": 99}
    unserved.settle(None)                                 # nothing served: nothing counted
    assert list(seg.counters.snapshot()) == [0, 12, 5, 2, 250_000_000]
    assert book.spent == [("team", 0.25)]


def test_take_deployment_takes_the_common_case_and_leaves_the_rest_to_the_caller(segments):
    seg = segments(2, [(1, 4, 1)], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[0])
    seg.set_test_clock(T0)
    book = Book(seg)
    gate = seg.admission(0)                               # deployment 0's rate queue
    book.deps[0] = book.ledger.draw(seg.bucket_pair(2, 3), seg.bucket_pair(2, 3), gate=gate)
    book.ledger.deployments[0] = book.deps[0]
    grant, _ = book.grant(tokens=30)
    assert grant.take_deployment(1) is True and grant.seen == []          # no rate limit: nothing to take
    assert grant.take_deployment(0) is True and grant.seen == [(book.deps[0], 30)]
    assert book.levels()[2:4] == [3, 50]
    assert gate.try_acquire(1)                            # someone holds the queue: the caller decides
    held, _ = book.grant(tokens=1)
    assert held.take_deployment(0) is False and held.seen == [] and book.levels()[2:4] == [3, 50]
    gate.release(1)
    short, _ = book.grant(tokens=51)                      # 50 tokens left: short, nothing taken
    assert short.take_deployment(0) is False and short.seen == [] and book.levels()[2:4] == [3, 50]
    store_pair = _StorePair(seg.bucket_pair(-1, 4))       # a store's pair (the cluster's): the caller's
    book.ledger.deployments[2] = book.ledger.draw(store_pair, seg.bucket_pair(-1, 4))
    assert short.take_deployment(2) is False and store_pair.calls == []
    busy = SimpleNamespace(counts=lambda: (0, 1))          # a gate that is not the segment's: asked
    book.ledger.deployments[2] = book.ledger.draw(seg.bucket_pair(-1, 4), seg.bucket_pair(-1, 4), gate=busy)
    assert short.take_deployment(2) is False
    busy.counts = lambda: (0, 0)
    assert short.take_deployment(2) is True and book.levels()[4] == 9    # 51 of its 60 tokens
    with pytest.raises(IndexError):
        grant.take_deployment(3)


def test_headers_come_from_the_limit_with_the_least_left(book):
    grant, _ = book.grant(tokens=70)
    assert grant.rate_headers()["x-ratelimit-remaining-tokens"] == "100"     # the key's, full
    grant.take_key()
    grant.take(book.deps[0])
    headers = grant.rate_headers()
    assert headers["x-ratelimit-limit-requests"] == "4"  # deployment 0: 3 left of 4
    assert headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-limit-tokens"] == "80"   # deployment 0: 10 left of 80
    assert headers["x-ratelimit-remaining-tokens"] == "10"
    assert grant.rate_fields() == "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
    keyless, _ = book.grant(keyed=False)
    assert keyless.rate_headers() == {} and keyless.rate_fields() == b""


def test_a_whole_answers_fields_show_the_levels_its_own_usage_left(book):
    grant, req = book.grant(tokens=70)
    grant.take_key()
    grant.take(book.deps[0])
    before = grant.rate_fields()                             # 10 tokens left of deployment 0's 80
    req.usage = {"prompt_tokens": 15, "completion_tokens": 5}
    fields = grant.settle_answered(0)                         # 50 of the 70 charged come back
    assert grant.settled and book.levels()[3] == 60
    assert b"x-ratelimit-remaining-tokens: 60\r\n" in fields and b"remaining-tokens: 10\r\n" in before
    assert fields == grant.rate_fields()
    assert grant.settle_answered(0) == fields and book.levels()[3] == 60     # settled once


def test_the_estimate_is_asked_for_only_when_a_tokens_bucket_needs_it(segments):
    seg = segments(2, [], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[0])
    seg.set_test_clock(T0)
    book = Book(seg)
    requests_only = book.ledger.draw(seg.bucket_pair(0, -1), seg.bucket_pair(0, -1))
    grant, _ = book.grant()
    assert grant.take(requests_only) is None and book.estimates == 0
    assert grant.amount(requests_only) == 0 and book.estimates == 0
    assert grant.amount(book.deps[1]) == 10 and grant.tokens == 10 and book.estimates == 1


def test_a_grant_without_a_key_has_no_slot_or_pair_of_its_own(book):
    grant, _ = book.grant(keyed=False)
    for call in (grant.acquire_slot, grant.take_key, grant.key_amount, grant.key_taken):
        with pytest.raises(ValueError):
            call()
    assert grant.take(book.deps[0]) is None and not grant.key_slot
    grant.settle(None)
    assert book.levels() == [5, 100, 3, 80, 60]          # its tokens back, not its request


def test_a_draw_has_both_pairs_or_neither(impl, segments):
    seg = segments(2, [], 0, 0, (), token_buckets=BUCKETS, key_max_concurrency=[0])
    ledger = seg.ledger(0, len, lambda *a: None)
    with pytest.raises(ValueError):
        ledger.draw(seg.bucket_pair(0, 1), None)
    assert ledger.draw(None, None, seg.key_concurrency(0)).has_tokens is False
    with pytest.raises(IndexError):
        seg.ledger(2, len, lambda *a: None)               # two workers: 0 and 1


class _StorePair:
    """A store's pair that is not the segment's (as the cluster's is): reached through its methods."""

    def __init__(self, pair):
        self.pair, self.has_tokens, self.calls = pair, pair.has_tokens, []

    def take(self, tokens):
        self.calls.append(("take", tokens))
        return self.pair.take(tokens)

    def adjust(self, delta):
        self.calls.append(("adjust", delta))
        self.pair.adjust(delta)


def test_a_pair_that_is_not_the_segments_is_taken_and_corrected_through_its_methods(book):
    store_pair = _StorePair(book.seg.bucket_pair(2, 3))
    dep = book.ledger.draw(store_pair, book.seg.bucket_pair(2, 3))
    grant, req = book.grant(tokens=15)
    assert grant.take(dep) is None
    req.usage = {"prompt_tokens": 4, "completion_tokens": 1}
    book.ledger.deployments[0] = dep
    grant.settle(0)
    assert store_pair.calls == [("take", 15), ("adjust", -10)]
    assert book.levels()[2:4] == [3, 75]


# ---------------------------------------------------------------- compiled == reference

_OPS = st.one_of(
    st.tuples(st.just("grant"), st.integers(0, 120), st.booleans()),
    st.tuples(st.just("admit"), st.integers(0, 120), st.booleans()),
    st.tuples(st.just("slot"), st.integers(0, 1)),
    st.tuples(st.just("key"), st.integers(0, 1)),
    st.tuples(st.just("take"), st.integers(0, 1), st.integers(0, 1)),
    st.tuples(st.just("take_deployment"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("refused"), st.integers(0, 1), st.integers(0, 1)),
    st.tuples(st.just("settle"), st.integers(0, 1), st.sampled_from([None, 0, 1, 2]), st.integers(0, 150)),
    st.tuples(st.just("release"), st.integers(0, 1)),
    st.tuples(st.just("headers"), st.integers(0, 1)),
    st.tuples(st.just("tick"), st.integers(1, 3000)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_OPS, max_size=40), st.sampled_from([0, 2]))
def test_compiled_grants_answer_as_the_reference(seq, key_limit):
    from fastinfer._core import shm as compiled
    books = {}

    def run(seg, op):
        book = books.setdefault(id(seg), (Book(seg), []))
        ledger, grants = book
        if op[0] == "grant":
            grants.append(ledger.grant(tokens=op[1], keyed=op[2]))
            return len(grants)
        if op[0] == "admit":
            grants.append(ledger.admit(tokens=op[1], keyed=op[2]))
            return grants[-1][0].refusal, grants[-1][0].wait, grants[-1][0].key_slot
        if not grants:
            return None
        grant, req = grants[-1 - op[1] % len(grants)]          # the latest grant or the one before
        if op[0] == "slot":
            return grant.acquire_slot() if grant.key is not None else None
        if op[0] == "key":
            return grant.take_key() if grant.key is not None else None
        if op[0] == "take_deployment":
            return grant.take_deployment(op[2])
        if op[0] in ("take", "refused"):
            dep = ledger.deps[op[2]]
            return grant.take(dep) if op[0] == "take" else grant.refused(dep)
        if op[0] == "settle":
            req.usage = {"prompt_tokens": op[3] // 2, "completion_tokens": op[3] - op[3] // 2}
            if op[2] is not None and op[3] % 2:       # a whole answer's end: its fields after settling
                return grant.settle_answered(op[2]), grant.settled, grant.key_slot
            grant.settle(op[2])
            return grant.settled, grant.key_slot
        if op[0] == "release":
            return grant.release()
        return grant.rate_headers(), grant.rate_fields()

    def observe(seg):
        book, grants = books[id(seg)]
        return (book.levels(), seg.key_concurrency(0).in_flight, book.usage, book.spent, book.estimates,
                [(g.key_tokens, [c for _, c in g.seen]) for g, _ in grants])

    replay(_layout(compiled, key_limit), seq, run, observe)
