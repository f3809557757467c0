"""Replica load in the shared segment (issue 9): the host's view of in-flight requests per
replica, a latency EWMA, health bits and a host-wide round-robin turn, so that "choosing a
replica and counting the request on it is one atomic step host-wide, so concurrent requests
spread exactly, and ties are broken round-robin host-wide (sequential requests rotate)"."""
import functools
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastinfer._core import shm as compiled
from fastinfer._core.constants import (
    LATENCY, LEAST_LOADED, MAX_REPLICAS, NO_REPLICA, POWER_OF_TWO, ROUND_ROBIN, ROUTING_POLICIES,
)
import shm_helpers
from shm_helpers import SegmentMaker, fork, gave_back, replay, wait_all

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=3, n_counters=0, n_histograms=0, bounds=())


def load(make, n=3, weights=None):
    seg = make(deployments=[(1, 0, n)], replica_weights=None if weights is None else [weights])
    return seg, seg.replicas(0)


def test_concurrent_requests_spread_exactly(make):
    seg, r = load(make)
    picks = [r.pick_and_start(w % 2, LEAST_LOADED) for w in range(9)]   # two workers, none finished
    assert Counter(picks) == {0: 3, 1: 3, 2: 3}
    assert [r.in_flight(i) for i in range(3)] == [3, 3, 3]
    assert r.held_by(0, 0) + r.held_by(1, 0) == 3


def test_sequential_requests_rotate_host_wide(make):
    seg, r = load(make)
    got = []
    for k in range(7):
        worker = k % 3                              # each request from another worker
        i = r.pick_and_start(worker, LEAST_LOADED)
        got.append(i)
        r.finish(worker, i, 0.01)
    assert got == [0, 1, 2, 0, 1, 2, 0]
    assert [r.in_flight(i) for i in range(3)] == [0, 0, 0]


def test_weights_are_honoured(make):
    seg, r = load(make, weights=[1, 2, 1])
    assert Counter(r.pick_and_start(0, LEAST_LOADED) for _ in range(8)) == {0: 2, 1: 4, 2: 2}
    seg, r = load(make, n=2, weights=[3, 1])
    picks = [r.pick_and_start(1, ROUND_ROBIN) for _ in range(8)]
    assert Counter(picks) == {0: 6, 1: 2}
    assert [r.weight(0), r.weight(1)] == [3, 1]


def test_avoided_and_unhealthy_replicas_get_nothing(make):
    seg, r = load(make, n=4)
    assert r.set_healthy(2, False) is True          # was healthy
    assert r.set_healthy(2, False) is False         # already unhealthy: no change to report
    assert not r.healthy(2) and r.healthy_mask == 0b1011
    for policy in ROUTING_POLICIES.values():
        for rand in range(12):
            assert r.pick_and_start(0, policy, avoid_mask=0b0001, rand=rand) in (1, 3)
    assert r.pick_and_start(0, LEAST_LOADED, avoid_mask=0b1011) == NO_REPLICA
    assert r.set_healthy(2, True) is False and r.healthy_mask == 0b1111
    assert r.pick_and_start(0, LEAST_LOADED, avoid_mask=0b1011) == 2


def test_power_of_two_compares_the_two_chosen(make):
    seg, r = load(make, n=3)
    for _ in range(5):
        r.start(0, 0)                               # replica 0 is busy
    # rand picks the pair: a = rand % 3, b from the rest; the lighter of the pair wins
    assert r.pick_and_start(0, POWER_OF_TWO, rand=0) == 1    # pair (0, 1)
    assert r.pick_and_start(0, POWER_OF_TWO, rand=2) == 2    # pair (2, 0)
    assert r.pick_and_start(0, POWER_OF_TWO, rand=4) == 1    # pair (1, 2), tie: the first
    assert r.pick_and_start(0, POWER_OF_TWO, avoid_mask=0b110, rand=99) == 0   # one left


def test_latency_spreads_a_burst_by_answer_time_and_load(make):
    """Cost = answer-time average x the requests a replica would hold: a burst goes mostly, not
    only, to the fastest (3x faster: 6 of 8), as answers arrive the averages move."""
    seg, r = load(make, n=2)
    for i, latency in ((0, 0.3), (1, 0.1)):
        r.start(0, i)
        r.finish(0, i, latency)
    picks = [r.pick_and_start(w % 2, LATENCY) for w in range(8)]    # two workers, none finished
    assert Counter(picks) == {1: 6, 0: 2}
    assert picks[:2] == [1, 1]
    r.finish(0, 1)                                  # no latency given: EWMA unchanged
    assert r.latency_s(1) == pytest.approx(0.1)


def test_latency_tries_an_unmeasured_replica_with_one_request_at_a_time(make):
    seg, r = load(make)
    for i, latency in ((0, 0.5), (1, 0.1)):
        r.start(0, i)
        r.finish(0, i, latency)
    assert r.latency_s(0) == 0.5 and r.latency_s(2) == 0.0
    assert r.pick_and_start(0, LATENCY) == 2        # no sample yet, idle: tried first
    assert 2 not in [r.pick_and_start(0, LATENCY) for _ in range(6)]    # its first is out: not a burst
    r.finish(0, 2, 0.02)                            # it answered, fast
    assert r.pick_and_start(0, LATENCY) == 2
    r.finish(0, 1, 1.1)                             # 0.1 + 0.2 * (1.1 - 0.1) = 0.3
    assert r.latency_s(1) == pytest.approx(0.3)


def test_latency_with_no_sample_anywhere_is_least_loaded(make):
    seg, r = load(make, weights=[1, 2, 1])
    picks = [r.pick_and_start(0, LATENCY) for _ in range(8)]
    assert Counter(picks) == {0: 2, 1: 4, 2: 2}


def test_start_finish_accounting(make):
    seg, r = load(make)
    r.start(1, 2)
    with pytest.raises(RuntimeError):
        r.finish(0, 2)                              # worker 0 started nothing there
    with pytest.raises(IndexError):
        r.start(0, 3)
    with pytest.raises(IndexError):
        r.pick_and_start(3, LEAST_LOADED)
    with pytest.raises(ValueError):
        r.pick_and_start(0, 7)
    r.finish(1, 2)
    assert r.in_flight(2) == 0 and r.held_by(1, 2) == 0


def test_reclaim_gives_back_a_dead_workers_requests(make):
    seg = make(deployments=[(1, 0, 2), (1, 0, 3)])
    a, b = seg.replicas(0), seg.replicas(1)
    a.start(2, 1)
    b.pick_and_start(2, LEAST_LOADED)
    b.pick_and_start(2, LEAST_LOADED)
    b.start(0, 0)
    assert gave_back(seg.reclaim_worker(2), replica_in_flight=3)
    assert [a.in_flight(i) for i in range(2)] == [0, 0]
    assert [b.in_flight(i) for i in range(3)] == [1, 0, 0]
    assert b.pick_and_start(1, LEAST_LOADED) != 0          # 0 is the only busy one now


def test_sixty_four_replicas_and_no_more(make, impl):
    seg, r = load(make, n=MAX_REPLICAS)
    top = 1 << 63
    assert r.pick_and_start(0, LEAST_LOADED, avoid_mask=(1 << 64) - 1 - top) == 63
    assert r.set_healthy(63, False) and r.healthy_mask == top - 1
    assert r.pick_and_start(0, LEAST_LOADED, avoid_mask=(1 << 64) - 1 - top) == NO_REPLICA
    with pytest.raises(ValueError, match="at most 64 replicas"):
        impl.Layout(1, [(1, 0, MAX_REPLICAS + 1)], 0, 0, [])
    with pytest.raises(ValueError, match="replica_weights"):
        impl.Layout(1, [(1, 0, 2)], 0, 0, [], replica_weights=[[1]])
    with pytest.raises(ValueError, match="replica_weights"):
        impl.Layout(1, [(1, 0, 1)], 0, 0, [], replica_weights=[[0]])


# ---------------------------------------------------------------- compiled == reference
WEIGHTS = [[1, 2, 1, 3], [1]]
ops = st.one_of(
    st.tuples(st.just("pick"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(list(ROUTING_POLICIES.values())),
              st.sampled_from([0, 0, 1, 2, 6, 15]), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("start"), st.integers(0, 1), st.integers(0, 3), st.integers(0, 4)),
    st.tuples(st.just("finish"), st.integers(0, 1), st.integers(0, 2), st.integers(0, 3),
              st.sampled_from([-1.0, 0.0, 0.01, 0.5, 2.0])),
    st.tuples(st.just("health"), st.integers(0, 1), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("reclaim"), st.integers(0, 2)),
)


def run(seg, op):
    kind, *a = op
    if kind == "reclaim":
        return seg.reclaim_worker(a[0])
    r = seg.replicas(a[0])
    if kind == "pick":
        return r.pick_and_start(*a[1:])
    if kind == "start":
        return r.start(*a[1:])
    if kind == "finish":
        return r.finish(*a[1:])
    return r.set_healthy(*a[1:])


def observe(seg):
    out = []
    for d, weights in enumerate(WEIGHTS):
        r = seg.replicas(d)
        out.append((r.healthy_mask, [(r.in_flight(i), r.latency_s(i), [r.held_by(w, i) for w in range(3)])
                                     for i in range(len(weights))]))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=60))
def test_compiled_matches_reference(seq):
    replay(compiled.Layout(3, [(1, 0, 4), (1, 0, 1)], 0, 0, [], replica_weights=WEIGHTS), seq, run, observe)


# ---------------------------------------------------------------- real processes
def _pick_many(seg, w, n, go_r):
    r = seg.replicas(0)
    assert os.read(go_r, 1) == b"g"
    for _ in range(n):
        assert r.pick_and_start(w, LEAST_LOADED) >= 0


def test_racing_processes_spread_exactly():
    """4 processes pick 3,000 times at once with nothing finishing: every pick counted on a
    replica that was the least loaded when it was counted, so the loads end within one
    request of each other (by weight)."""
    maker = SegmentMaker(compiled, "fi-rep-mp")
    go_r, go_w = os.pipe()
    try:
        seg = maker(4, [(1, 0, 3)], 0, 0, [], replica_weights=[[1, 2, 3]])
        pids = [fork(_pick_many, seg, w, 750, go_r) for w in range(4)]
        os.write(go_w, b"g" * 4)
        assert wait_all(pids, 60) == [0] * 4
        r = seg.replicas(0)
        loads = [r.in_flight(i) / r.weight(i) for i in range(3)]
        assert sum(r.in_flight(i) for i in range(3)) == 3000
        assert max(loads) - min(loads) <= 1, loads
        assert gave_back(seg.reclaim_worker(2), replica_in_flight=750)
    finally:
        os.close(go_r)
        os.close(go_w)
        maker.cleanup()


def _churn(seg, w, n):
    r = seg.replicas(0)
    for k in range(n):
        i = r.pick_and_start(w, k % 4, 0, k * 2654435761)
        r.finish(w, i, 0.001 * (k % 7))


def test_churn_across_processes_leaves_nothing_counted():
    maker = SegmentMaker(compiled, "fi-rep-mp")
    try:
        seg = maker(4, [(1, 0, 5)], 0, 0, [])
        assert wait_all([fork(_churn, seg, w, 4000) for w in range(4)], 60) == [0] * 4
        r = seg.replicas(0)
        assert [r.in_flight(i) for i in range(5)] == [0] * 5
        assert all(r.held_by(w, i) == 0 for w in range(4) for i in range(5))
        assert all(0 < r.latency_s(i) < 0.007 for i in range(5))
    finally:
        maker.cleanup()
