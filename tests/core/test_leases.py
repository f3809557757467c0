"""Host leases: per-host background work (session reaper, health prober, cluster sync, state
flush) runs in exactly one worker of the host at a time, taken over when its holder dies."""
import os
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastinfer._core import shm as compiled
from fastinfer._core.constants import LEASE_HEALTH_PROBER, LEASE_SESSION_REAPER, N_LEASES
import shm_helpers
from shm_helpers import T0, SegmentMaker, fork, gave_back, replay, wait_all

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

MS = 10**6


@pytest.fixture
def seg(segments):
    seg = segments(3, [], 2, 0, [])
    seg.set_test_clock(T0)
    return seg


def test_one_holder_renews_others_wait(seg):
    reaper = seg.lease(LEASE_SESSION_REAPER)
    assert reaper.holder == -1 and reaper.expires_in_s == 0.0
    assert reaper.try_hold(1, 5.0)
    assert not reaper.try_hold(0, 5.0) and not reaper.try_hold(2, 0.0)
    assert reaper.holder == 1 and reaper.expires_in_s == 5.0
    seg.set_test_clock(T0 + 3000 * MS)
    assert reaper.try_hold(1, 5.0) and reaper.expires_in_s == 5.0      # renewed from now
    seg.set_test_clock(T0 + 7999 * MS)
    assert not reaper.try_hold(0, 5.0) and reaper.holder == 1
    seg.set_test_clock(T0 + 8000 * MS)                                 # expired: taken over
    assert reaper.holder == -1
    assert reaper.try_hold(0, 5.0) and reaper.holder == 0
    assert not reaper.try_hold(1, 5.0)
    assert seg.lease(LEASE_HEALTH_PROBER).try_hold(1, 5.0)             # leases are independent


def test_release_and_reclaim(seg):
    a, b = seg.lease(0), seg.lease(1)
    assert a.try_hold(2, 60) and b.try_hold(2, 60)
    assert not a.release(1) and a.holder == 2
    assert a.release(2) and a.holder == -1 and not a.release(2)
    assert a.try_hold(0, 60)
    assert gave_back(seg.reclaim_worker(2), leases=1)                  # b, at once, not in 60 s
    assert b.holder == -1 and b.try_hold(1, 60) and a.holder == 0
    assert gave_back(seg.reclaim_worker(2))


def test_bad_arguments(seg):
    with pytest.raises(IndexError):
        seg.lease(N_LEASES)
    with pytest.raises(IndexError):
        seg.lease(0).try_hold(3, 1.0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            seg.lease(0).try_hold(0, bad)
    assert seg.lease(0).try_hold(0, float("inf")) and seg.lease(0).expires_in_s > 10**9


ops = st.one_of(
    st.tuples(st.just("hold"), st.integers(0, 2), st.integers(0, 3), st.sampled_from([0.0, 0.05, 1.0, 2.5])),
    st.tuples(st.just("release"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("reclaim"), st.integers(0, 3)),
    st.tuples(st.just("tick"), st.sampled_from([1, 49, 50, 999, 2500])),
)


def run(seg, op):
    kind, *a = op
    if kind == "hold":
        return seg.lease(a[0]).try_hold(a[1], a[2])
    if kind == "release":
        return seg.lease(a[0]).release(a[1])
    return seg.reclaim_worker(a[0])


def observe(seg):
    return [(seg.lease(j).holder, seg.lease(j).expires_in_s) for j in range(3)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=40))
def test_compiled_matches_reference(seq):
    replay(compiled.Layout(3, [], 0, 0, []), seq, run, observe)


# ---------------------------------------------------------------- real processes
HOLDING, OVERLAPS, TURNS = 0, 1, 2


def _take_turns(seg, w, until):
    lease, c = seg.lease(LEASE_SESSION_REAPER), seg.counters
    while time.monotonic() < until:
        if lease.try_hold(w, 30.0):
            if c.get(HOLDING) != 0:
                c.add(OVERLAPS)
            c.add(HOLDING, 1)
            c.add(TURNS)
            for _ in range(200):
                pass
            c.add(HOLDING, -1)
            assert lease.release(w)


def test_exactly_one_worker_holds_it_at_a_time():
    maker = SegmentMaker(compiled, "fi-lease-mp")
    try:
        seg = maker(4, [], 3, 0, [])
        until = time.monotonic() + 0.5
        assert wait_all([fork(_take_turns, seg, w, until) for w in range(4)], 60) == [0] * 4
        assert seg.counters.get(OVERLAPS) == 0
        assert seg.counters.get(TURNS) > 4
        assert seg.lease(LEASE_SESSION_REAPER).holder == -1
    finally:
        maker.cleanup()


def _hold_and_hang(seg, ready_w):
    assert seg.lease(LEASE_HEALTH_PROBER).try_hold(1, 3600.0)
    os.write(ready_w, b"r")
    time.sleep(60)


def test_a_killed_holders_lease_is_free_after_reclaim():
    maker = SegmentMaker(compiled, "fi-lease-mp")
    r, w = os.pipe()
    try:
        seg = maker(2, [], 0, 0, [])
        prober = seg.lease(LEASE_HEALTH_PROBER)
        pid = fork(_hold_and_hang, seg, w)
        assert os.read(r, 1) == b"r"
        os.kill(pid, signal.SIGKILL)
        assert wait_all([pid], 10) == [-signal.SIGKILL]
        assert prober.holder == 1 and not prober.try_hold(0, 10.0)    # an hour's TTL left ...
        assert gave_back(seg.reclaim_worker(1), leases=1)             # ... until the supervisor reclaims
        assert prober.try_hold(0, 10.0) and prober.holder == 0
    finally:
        os.close(r)
        os.close(w)
        maker.cleanup()
