"""Breaker configuration is written once, from the Layout, when the segment is created
(issue 11 item 4): workers that start later never reset what the host has built; durations
are clamped; the same for the compiled core and its reference."""
import functools
import math

import pytest

from fastinfer._core.constants import CLOSED, HALF_OPEN, MAX_SPAN_NS, OPEN, PROBE, REJECTED
from fastinfer.breaker import deployment_breakers
from fastinfer.config import parse_config
import shm_helpers
from shm_helpers import T0

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

S = 10**9


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=2, n_counters=0, n_histograms=0, bounds=())


def test_breakers_take_their_deployments_configuration_at_creation(make):
    seg = make(deployments=[(1, 0, 2), (1, 0, 1), (1, 0, 0)],
               breakers=[(3, 1.5, 12.0, 2), (1, 0.25, 0.5, 1), (7, 1.0, 1.0, 1)])
    assert seg.breaker(0, 0).config == seg.breaker(0, 1).config == (3, 1.5, 12.0, 2)
    assert seg.breaker(1, 0).config == (1, 0.25, 0.5, 1)
    seg.set_test_clock(T0)
    b = seg.breaker(0, 1)
    for _ in range(2):
        b.record_failure(0)
    assert b.state == CLOSED                        # threshold 3, not the default 5 ...
    b.record_failure(1)
    assert b.state == OPEN and b.retry_after_s == 1.5
    assert seg.breaker(0, 0).state == CLOSED


def test_default_configuration_is_the_contracts(make):
    seg = make(deployments=[(1, 0, 1)])
    assert seg.breaker(0, 0).config == (5, 30.0, 300.0, 1)
    assert seg.layout.breakers == [(5, 30.0, 300.0, 1)]


def _config(threshold=1, open_s=1.0, max_open_s=8.0):
    return parse_config({"deployments": [{
        "name": "m", "provider": "mock",
        "circuit_breaker": {"failure_threshold": threshold, "open_s": open_s, "max_open_s": max_open_s},
        "replicas": [{"name": "a"}, {"name": "b"}]}]})


def test_a_worker_starting_later_keeps_the_hosts_grown_open_time(make):
    """Every worker's start-up used to re-configure the breakers, resetting the open time a
    failing replica had grown to. Now building a worker's view touches nothing."""
    dep = _config().deployments[0]
    seg = make(deployments=[(1, 0, 2)], breakers=[(1, 1.0, 8.0, 1)])
    seg.set_test_clock(T0)
    first = deployment_breakers(seg, 0, dep, worker=0)
    first.record(0, probe=False, failed=True)             # open for 1 s
    seg.set_test_clock(T0 + 1 * S)
    assert first.check(0) == PROBE
    first.record(0, probe=True, failed=True)              # the probe fails: re-open for 2 s
    assert first.breakers[0].retry_after_s == 2.0
    deployment_breakers(seg, 0, dep, worker=1)             # a worker (re)starts
    assert first.breakers[0].retry_after_s == 2.0 and first.breakers[0].state == OPEN
    seg.set_test_clock(T0 + 3 * S)
    assert first.check(0) == PROBE
    first.record(0, probe=True, failed=True)              # grows on: 4 s, not back to 1 s
    assert first.breakers[0].retry_after_s == 4.0
    assert first.breakers[1].state == CLOSED


def test_configure_keeps_the_grown_open_time_within_new_bounds(make):
    seg = make(deployments=[(1, 0, 1)], breakers=[(1, 1.0, 100.0, 1)])
    seg.set_test_clock(T0)
    b = seg.breaker(0, 0)
    b.record_failure(0)
    now = T0
    for expect in (2.0, 4.0, 8.0):
        now += int(b.retry_after_s * S)
        seg.set_test_clock(now)
        assert b.check(0) == PROBE
        b.record_failure(0, probe=True)
        assert b.retry_after_s == expect
    b.configure(1, 1.0, 100.0, 1)                         # same config again: 8 s is kept
    now += 8 * S
    seg.set_test_clock(now)
    assert b.check(0) == PROBE
    b.record_failure(0, probe=True)
    assert b.retry_after_s == 16.0
    b.configure(1, 1.0, 5.0, 1)                           # a lower ceiling clamps it
    now += 16 * S
    seg.set_test_clock(now)
    assert b.check(0) == PROBE
    b.record_failure(0, probe=True)
    assert b.retry_after_s == 5.0


@pytest.mark.parametrize("duration", [1e300, math.inf, 2.0**62 / 1e9, 1e10])
def test_force_open_with_a_huge_duration_stays_open(make, duration):
    """force_open(1e300) used to overflow the state word and leave the circuit half-open."""
    seg = make(deployments=[(1, 0, 1)])
    seg.set_test_clock(T0)
    b = seg.breaker(0, 0)
    b.force_open(duration)
    assert b.state == OPEN and b.check(0) == REJECTED
    assert b.retry_after_s == pytest.approx(min(duration, MAX_SPAN_NS / 1e9), rel=1e-9)
    seg.set_test_clock(T0 + 10**9 * S)                    # 31 years later: still open
    assert b.state == OPEN
    b.reset()
    assert b.state == CLOSED


def test_force_open_rejects_negative_and_nan(make):
    b = make(deployments=[(1, 0, 1)]).breaker(0, 0)
    for bad in (-1.0, -math.inf, math.nan):
        with pytest.raises(ValueError):
            b.force_open(bad)
    assert b.state == CLOSED and b.transitions == (0, 0, 0)


def test_huge_configured_open_times_are_clamped(make):
    seg = make(deployments=[(1, 0, 1)], breakers=[(1, 1e15, 1e18, 1)])
    seg.set_test_clock(T0)
    b = seg.breaker(0, 0)
    assert b.config == (1, MAX_SPAN_NS / 1e9, MAX_SPAN_NS / 1e9, 1)
    b.record_failure(0)
    assert b.state == OPEN and b.retry_after_s == MAX_SPAN_NS / 1e9
    seg.set_test_clock(T0 + MAX_SPAN_NS)
    assert b.state == HALF_OPEN and b.check(0) == PROBE
    b.record_failure(0, probe=True)                       # doubling stays within what the word holds
    assert b.state == OPEN and b.retry_after_s == pytest.approx(MAX_SPAN_NS / 1e9, rel=1e-2)


@pytest.mark.parametrize("bad", [[(0, 1.0, 2.0, 1)], [(1, 3.0, 2.0, 1)], [(1, 1.0, math.inf, 1)],
                                 [(1, 1.0, 2.0, 0)], [(1, 1.0, 2.0, 1)] * 2])
def test_layout_refuses_bad_breaker_configuration(impl, bad):
    with pytest.raises(ValueError, match="breakers"):
        impl.Layout(1, [(1, 0, 1)], 0, 0, [], breakers=bad)


def test_host_state_configures_breakers_from_the_config():
    from fastinfer.process.hostwide import HostState
    host = HostState.create(_config(threshold=4, open_s=2.5, max_open_s=9.0), 2)
    try:
        assert host.segment.breaker(0, 1).config == (4, 2.5, 9.0, 1)
    finally:
        host.close()


def test_a_breaker_set_asks_and_tells_each_replicas_breaker_as_one_worker(make):
    """The engine's four calls per request, on both implementations: a verdict goes to the right
    replica, in the worker's name (its probe is its own), and the set answers for all of them."""
    seg = make(deployments=[(1, 0, 2)], breakers=[(1, 1.0, 8.0, 1)])
    seg.set_test_clock(T0)
    worker1 = seg.breaker_set(0, 2, 1)
    assert worker1.check(0) == worker1.check(1) == 0 and not worker1.all_open()
    assert worker1.retry_after_s() == 0.0
    worker1.record(1, probe=False, failed=True)                 # replica 1 opens for 1 s
    assert seg.breaker(0, 1).state == OPEN and seg.breaker(0, 0).state == CLOSED
    assert not worker1.all_open() and worker1.retry_after_s() == 1.0
    seg.set_test_clock(T0 + S // 2)
    worker1.record(0, probe=False, failed=True)                 # replica 0 opens for 1 s, later
    assert worker1.all_open() and worker1.retry_after_s() == 0.5  # the first to admit a probe
    assert worker1.check(0) == REJECTED
    seg.set_test_clock(T0 + 2 * S)
    assert not worker1.all_open()                               # both due: half-open
    assert worker1.check(1) == PROBE and worker1.check(1) == REJECTED   # one probe at a time
    worker1.record(1, probe=True, failed=None)                  # no verdict: the probe is given back
    assert worker1.check(1) == PROBE
    worker1.record(1, probe=True, failed=False)                 # it succeeded: closed
    assert seg.breaker(0, 1).state == CLOSED
    for bad in (2, -1):
        with pytest.raises(IndexError):
            worker1.check(bad)
        with pytest.raises(IndexError):
            worker1.record(bad, False, True)
    with pytest.raises(IndexError):
        seg.breaker_set(0, 2, 2)                                # no such worker
