"""Reload carries state (issue 10 item 5): circuit states and open times, histograms,
buckets, spend, session bindings (and counters, health, prefix entries) copied from an old
segment into a new one by index mapping, then topped up with what the old generation did
while it drained. The compiled core and the reference alike; then by name through
HostState, and through a real reload of a running gateway."""
import functools

import numpy
import pytest

from fastinfer._core.carry import StateMap, carry_state
from fastinfer._core.constants import CLOSED, HALF_OPEN, OPEN, SESSION_NONE, SESSION_OPEN
import shm_helpers
from shm_helpers import T0

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

S = 10**9
BOUNDS = (0.1, 1.0)


def key(i):
    return i.to_bytes(16, "little")


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=2, n_histograms=3, bounds=BOUNDS)


def old_and_new(make):
    """Old: deployments a (replicas x, y) and b (z); keys k0, k1; buckets [k0 rpm, a rpm].
    New: deployment b first, then a with its replicas swapped and a new one; k1 only; a new
    bucket first. Test clock on both."""
    old = make(deployments=[(1, 0, 2), (1, 0, 1)], n_counters=3, breakers=[(1, 1.0, 60.0, 1)] * 2,
               token_buckets=[(60, 10), (120, 20)], key_max_concurrency=[0, 0], max_sessions=64,
               prefix_capacity=[64, 0])
    new = make(deployments=[(1, 0, 1), (1, 0, 3)], n_counters=4, breakers=[(1, 1.0, 60.0, 1)] * 2,
               token_buckets=[(600, 100), (120, 20), (60, 10)], key_max_concurrency=[0], max_sessions=64,
               prefix_capacity=[0, 64])
    for seg in (old, new):
        seg.set_test_clock(T0)
    m = StateMap(deployments={0: 1, 1: 0},
                 replicas={(0, 0): (1, 1), (0, 1): (1, 0), (1, 0): (0, 0)},   # a.x -> 1, a.y -> 0, b.z
                 buckets={0: 2, 1: 1}, keys={1: 0}, counters={0: 3, 2: 0}, histograms={0: 2, 1: 1})
    return old, new, m


def test_a_roll_carries_everything_by_mapping(make):
    old, new, m = old_and_new(make)
    # circuits: a.x open with a grown open time, a.y two failures short of nothing, b.z closed
    x = old.breaker(0, 0)
    x.record_failure(0)
    old.set_test_clock(T0 + 1 * S)
    assert x.check(0) == 2
    x.record_failure(0, probe=True)                   # re-opened for 2 s
    old.breaker(0, 1).force_open(30.0)
    old.replicas(0).set_healthy(1, False)
    # counters, histograms, buckets, spend
    old.counters.add(0, 7)
    old.counters.add(1, 99)                           # not mapped: the new config dropped it
    old.counters.add(2, 3)
    old.histograms.observe(0, 0.05)
    old.histograms.observe(0, 5.0)
    old.histograms.observe(1, 0.5)
    assert old.bucket(0).take(4) and old.bucket(1).take(15)
    old.key_spend(0).add(100, 1)
    old.key_spend(1).add(100, 2500)
    # sessions: one on a.x with an open backend session, one on b.z, one on a.y
    t = old.sessions
    t.bind(key(1), 0, 0, 60.0)
    t.backend_transition(key(1), SESSION_NONE, SESSION_OPEN, 0)
    t.bind(key(2), 1, 0, 60.0)
    t.bind(key(3), 0, 1, 60.0)
    old.prefix(0).insert(0, numpy.array([11, 12], dtype=numpy.uint64), 0)
    old.prefix(0).insert(0, numpy.array([11], dtype=numpy.uint64), 1)
    old.set_test_clock(T0 + 2 * S)
    new.set_test_clock(T0 + 2 * S)

    carried = carry_state(old, new, m)

    assert new.breaker(1, 1).export() == (OPEN, 1.0, 2.0, 1)          # a.x: 1 s left, grown to 2 s
    assert new.breaker(1, 0).export() == (OPEN, 29.0, 1.0, 0)         # a.y
    assert new.breaker(1, 2).state == CLOSED and new.breaker(0, 0).state == CLOSED
    assert new.replicas(1).healthy_mask == 0b110                      # a.y (now replica 0) unhealthy
    assert new.counters.snapshot().tolist() == [3, 0, 0, 7]
    assert new.histograms.snapshot(2) == ([1, 1, 2], 2, 5.05) and new.histograms.snapshot(1)[1] == 1
    assert new.histograms.snapshot(0)[1] == 0
    assert new.bucket(2).available() == 7.0 and new.bucket(1).available() == 7.0   # (refilled 1 s)
    assert new.bucket(0).available() == 100.0                          # new: starts full
    assert new.key_spend(0).export() == (100, 2500)
    s1, s2, s3 = (new.sessions.get(key(i)) for i in (1, 2, 3))
    assert (s1.deployment, s1.replica, s1.backend_state, s1.backend_replica) == (1, 1, SESSION_OPEN, 1)
    assert (s2.deployment, s2.replica) == (0, 0) and (s3.deployment, s3.replica) == (1, 0)
    assert s1.idle_s == 1.0 and carried.dropped_sessions == []          # bound at T0 + 1 s
    assert new.prefix(1).match(numpy.array([11, 12], dtype=numpy.uint64)) == [1, 2, 0]


def test_bindings_the_new_config_cannot_hold_are_handed_back(make):
    old, new, m = old_and_new(make)
    del m.replicas[(0, 1)]                            # a.y removed by the new config
    old.sessions.bind(key(1), 0, 1, 60.0)
    old.sessions.bind(key(2), 0, 0, 60.0)
    old.sessions.backend_transition(key(2), SESSION_NONE, SESSION_OPEN, 1)   # open on a.y
    old.sessions.bind(key(3), 0, 0, 60.0)
    carried = carry_state(old, new, m)
    assert sorted(i.key for i in carried.dropped_sessions) == [key(1), key(2)]
    assert new.sessions.touch(key(3)) == 1 and new.sessions.occupancy == 1


def test_what_the_old_generation_did_while_draining_is_added_later(make):
    old, new, m = old_and_new(make)
    old.counters.add(0, 5)
    old.histograms.observe(0, 0.05)
    assert old.bucket(0).take(2)
    old.key_spend(1).add(100, 1000)
    carried = carry_state(old, new, m)
    # the old generation drains: its requests finish, are corrected, counted
    old.counters.add(0, 2)
    old.histograms.observe(0, 0.5)
    old.bucket(0).refund(1)                           # a request admitted before the roll failed
    old.bucket(1).charge(3)                           # TPM correction beyond the estimate
    old.key_spend(1).add(100, 40)
    # meanwhile the new generation serves too
    new.counters.add(3, 1)
    assert new.bucket(1).take(1)
    carry_state(old, new, m, since=carried)
    assert new.counters.get(3) == 5 + 2 + 1
    assert new.histograms.snapshot(2)[0] == [1, 2, 2]
    assert new.bucket(2).available() == 10 - 2 + 1
    assert new.bucket(1).available() == 20 - 1 - 3
    assert new.key_spend(0).export() == (100, 1040)


def test_own_and_remote_use_are_carried_each_to_its_own_counter(make):
    """A cluster sync publishes ``consumed`` as this host's own use: a reload carries it and
    ``remote`` (other hosts' use) as totals, at the roll and after the drain, never one into the other."""
    old, new, m = old_and_new(make)
    assert old.bucket(1).take(5)
    old.bucket(1).charge_remote(4)
    carried = carry_state(old, new, m)
    assert (new.bucket(1).consumed, new.bucket(1).remote) == (5, 4)
    assert new.bucket(1).available() == 20 - 5 - 4                  # the level once, not twice
    old.bucket(1).charge_remote(6)                                    # the drain: others' use ...
    old.bucket(1).refund_remote(1)
    old.bucket(1).charge(2)                                           # ... and its own
    carry_state(old, new, m, since=carried)
    assert (new.bucket(1).consumed, new.bucket(1).remote) == (7, 9)
    assert new.bucket(1).available() == 20 - 7 - 9


def test_a_counter_that_wraps_while_draining_carries_what_it_counted(make):
    old, new, m = old_and_new(make)
    old.counters.set(0, 2**63 - 1)
    carried = carry_state(old, new, m)
    new.counters.set(3, 0)
    old.counters.add(0, 3)                            # int64 wraps, as the hardware's add does
    carry_state(old, new, m, since=carried)
    assert new.counters.get(3) == 3


def test_spend_of_a_new_period_during_the_drain(make):
    old, new, m = old_and_new(make)
    old.key_spend(1).add(100, 500)
    carried = carry_state(old, new, m)
    old.key_spend(1).add(101, 30)                     # midnight passed while draining
    new.key_spend(0).add(101, 7)
    carry_state(old, new, m, since=carried)
    assert new.key_spend(0).export() == (101, 37)


def test_breaker_export_restore(make):
    seg = make(deployments=[(1, 0, 2)], n_counters=0, breakers=[(2, 1.0, 8.0, 1)])
    seg.set_test_clock(T0)
    a, b = seg.breaker(0, 0), seg.breaker(0, 1)
    a.record_failure(0)
    assert a.export() == (CLOSED, 0.0, 1.0, 1)
    a.record_failure(0)
    seg.set_test_clock(T0 + 1 * S)
    assert a.export() == (HALF_OPEN, 0.0, 1.0, 2)
    b.restore(a.export())
    assert b.state == HALF_OPEN and b.check(1) == 2
    b.restore((OPEN, 5.0, 100.0, 0))                 # a grown time beyond the bounds is clamped
    assert b.export() == (OPEN, 5.0, 8.0, 0)
    b.restore((CLOSED, 0.0, 0.0, 1))
    assert b.export() == (CLOSED, 0.0, 1.0, 1)
    with pytest.raises(ValueError):
        b.restore((7, 0.0, 1.0, 0))


def test_histogram_raw_round_trip(make):
    seg = make(deployments=[], n_counters=0)
    h = seg.histograms
    for v in (0.05, 0.5, 0.5, 9.0):
        h.observe(0, v)
    counts, sum_ns = h.raw(0)
    assert counts == [1, 2, 1] and sum_ns == 10_050_000_000
    h.add_raw(1, counts, sum_ns)
    assert h.snapshot(1) == h.snapshot(0)
    with pytest.raises(ValueError):
        h.add_raw(1, [1, 2], 0)
