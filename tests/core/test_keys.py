"""Gateway keys in the shared segment: requests in flight per key (max_concurrency,
host-wide, owner-tracked) and spend per key in its budget period (micro-USD; a new period
starts from zero atomically). Compiled against reference, and across real processes."""
import functools
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastinfer._core import shm as compiled
from fastinfer._core.constants import MAX_PERIOD, MAX_SPEND
import shm_helpers
from shm_helpers import SegmentMaker, fork, gave_back, replay, wait_all

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=3, deployments=[], n_counters=4, n_histograms=0, bounds=())


# ---------------------------------------------------------------- concurrency
def test_a_keys_limit_holds_across_workers(make):
    seg = make(key_max_concurrency=[2, 0])
    k = seg.key_concurrency(0)
    assert k.limit == 2 and k.in_flight == 0
    assert [k.try_acquire(0), k.try_acquire(1), k.try_acquire(2)] == [True, True, False]
    assert k.in_flight == 2 and (k.held_by(0), k.held_by(1), k.held_by(2)) == (1, 1, 0)
    k.release(1)
    assert k.try_acquire(2) and k.held_by(2) == 1
    with pytest.raises(RuntimeError):
        k.release(1)                                   # holds none: no double release
    assert k.in_flight == 2
    assert seg.key_concurrency(1).limit == 0           # not limited: counted only
    assert all(seg.key_concurrency(1).try_acquire(0) for _ in range(100))
    assert seg.key_concurrency(1).in_flight == 100


def test_reserved_requests_count_against_a_keys_limit_until_given_back(make):
    """A reload's new generation counts the old one's requests of the key (``reserve``)."""
    seg = make(key_max_concurrency=[2, 0])
    k = seg.key_concurrency(0)
    assert k.reserve(2) == 2 and k.in_flight == 2
    assert k.try_acquire(0) is False
    k.unreserve(1)
    assert k.try_acquire(0) and k.try_acquire(1) is False
    k.unreserve(1)
    k.release(0)
    assert k.in_flight == 0


def test_reclaim_gives_back_a_dead_workers_key_slots(make):
    seg = make(key_max_concurrency=[3, 0])
    a, b = seg.key_concurrency(0), seg.key_concurrency(1)
    assert a.try_acquire(1) and a.try_acquire(1) and a.try_acquire(2)
    assert b.try_acquire(1)
    assert not a.try_acquire(0)
    assert gave_back(seg.reclaim_worker(1), key_slots=3)
    assert a.in_flight == 1 and b.in_flight == 0 and a.held_by(1) == 0
    assert a.try_acquire(0) and a.try_acquire(0) and not a.try_acquire(0)
    assert gave_back(seg.reclaim_worker(1))


def test_key_indices_and_layout(make, impl):
    seg = make(key_max_concurrency=[1])
    with pytest.raises(IndexError):
        seg.key_concurrency(1)
    with pytest.raises(IndexError):
        seg.key_spend(-1)
    with pytest.raises(IndexError):
        seg.key_concurrency(0).try_acquire(3)
    with pytest.raises(ValueError, match="key_max_concurrency"):
        impl.Layout(1, [], 0, 0, [], key_max_concurrency=[-1])


# ---------------------------------------------------------------- spend
def test_spend_accumulates_within_a_period_and_restarts_with_the_next(make):
    s = make(key_max_concurrency=[0]).key_spend(0)
    assert s.spent(19_000) == 0 and s.export() == (0, 0)
    assert s.add(19_000, 1_500) == 1_500
    assert s.add(19_000, 250) == 1_750
    assert s.spent(19_000) == 1_750 and s.spent(19_001) == 0
    assert s.add(19_001, 10) == 10                     # a new day starts from zero ...
    assert s.spent(19_000) == 0 and s.spent(19_001) == 10
    assert s.add(19_000, 5) == 15                      # ... and a late charge of the old day counts in it
    assert s.export() == (19_001, 15)


def test_spend_corrections_and_saturation(make):
    s = make(key_max_concurrency=[0]).key_spend(0)
    s.add(3, 100)
    assert s.add(3, -40) == 60
    assert s.add(3, -1000) == 0                        # never below zero
    assert s.add(3, MAX_SPEND - 5) == MAX_SPEND - 5
    assert s.add(3, 10**12) == MAX_SPEND               # saturates, never wraps into the period bits
    assert s.export() == (3, MAX_SPEND)
    assert s.add(MAX_PERIOD, 7) == 7 and s.export() == (MAX_PERIOD, 7)


def test_spend_export_restore_and_bad_periods(make):
    seg = make(key_max_concurrency=[0, 0])
    a, b = seg.key_spend(0), seg.key_spend(1)
    a.add(20_000, 12_345)
    b.restore(*a.export())
    assert b.spent(20_000) == 12_345 and b.add(20_000, 5) == 12_350
    for bad in (-1, MAX_PERIOD + 1):
        with pytest.raises(ValueError, match="period"):
            a.add(bad, 1)
        with pytest.raises(ValueError, match="period"):
            a.spent(bad)
    with pytest.raises(ValueError):
        b.restore(1, -5)
    with pytest.raises(ValueError):
        b.restore(1, MAX_SPEND + 1)
    assert a.export() == (20_000, 12_345)


# ---------------------------------------------------------------- compiled == reference
w_ = st.sampled_from([0, 1, 2, 3])                     # 3 is out of range on purpose
k_ = st.integers(0, 1)
ops = st.one_of(
    st.tuples(st.just("acquire"), k_, w_),
    st.tuples(st.just("release"), k_, w_),
    st.tuples(st.just("reclaim"), w_),
    st.tuples(st.just("add"), k_, st.sampled_from([0, 5, 6, 6, 7, MAX_PERIOD + 1]),
              st.sampled_from([1, 10, -3, -100, 2**47, MAX_SPEND])),
    st.tuples(st.just("spent"), k_, st.sampled_from([0, 5, 6, 7])),
    st.tuples(st.just("restore"), k_, st.sampled_from([0, 6, 9]), st.sampled_from([0, 17, MAX_SPEND + 1])),
)


def run(seg, op):
    kind, *a = op
    if kind == "acquire":
        return seg.key_concurrency(a[0]).try_acquire(a[1])
    if kind == "release":
        return seg.key_concurrency(a[0]).release(a[1])
    if kind == "reclaim":
        return seg.reclaim_worker(a[0])
    if kind == "add":
        return seg.key_spend(a[0]).add(a[1], a[2])
    if kind == "spent":
        return seg.key_spend(a[0]).spent(a[1])
    return seg.key_spend(a[0]).restore(a[1], a[2])


def observe(seg):
    return [(seg.key_concurrency(k).in_flight, [seg.key_concurrency(k).held_by(w) for w in range(3)],
             seg.key_spend(k).export()) for k in range(2)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=50))
def test_compiled_matches_reference(seq):
    replay(compiled.Layout(3, [], 0, 0, [], key_max_concurrency=[2, 0]), seq, run, observe)


# ---------------------------------------------------------------- real processes
INSIDE, VIOLATIONS, DONE = 0, 1, 2


def _use_key(seg, w, cycles, limit):
    k, c = seg.key_concurrency(0), seg.counters
    for _ in range(cycles):
        if not k.try_acquire(w):
            continue
        if c.get(INSIDE) >= limit or k.in_flight > limit:
            c.add(VIOLATIONS)
        c.add(INSIDE)
        c.add(INSIDE, -1)
        k.release(w)
        c.add(DONE)


def test_a_keys_limit_is_never_exceeded_by_racing_processes():
    maker = SegmentMaker(compiled, "fi-keys-mp")
    try:
        seg = maker(4, [], 4, 0, [], key_max_concurrency=[2])
        assert wait_all([fork(_use_key, seg, w, 5000, 2) for w in range(4)], 60) == [0] * 4
        assert seg.counters.get(VIOLATIONS) == 0 and seg.counters.get(DONE) > 0
        assert seg.key_concurrency(0).in_flight == 0
        assert [seg.key_concurrency(0).held_by(w) for w in range(4)] == [0] * 4
    finally:
        maker.cleanup()


def _spend(seg, go_r, n):
    s = seg.key_spend(0)
    for _ in range(n):
        s.add(100, 3)
    assert os.read(go_r, 1) == b"g"               # everyone finished day 100: day 101 begins
    for _ in range(n):
        s.add(101, 2)


def test_spend_is_exact_across_processes_and_a_period_change():
    maker = SegmentMaker(compiled, "fi-keys-mp")
    go_r, go_w = os.pipe()
    try:
        seg = maker(4, [], 1, 0, [], key_max_concurrency=[0])
        pids = [fork(_spend, seg, go_r, 5000) for _ in range(4)]
        s = seg.key_spend(0)
        deadline = time.monotonic() + 60
        while s.spent(100) < 60_000 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert s.spent(100) == 60_000
        os.write(go_w, b"g" * 4)
        assert wait_all(pids, 60) == [0] * 4
        assert s.export() == (101, 40_000)
    finally:
        os.close(go_r)
        os.close(go_w)
        maker.cleanup()
