"""Behaviour of the shared-memory core, the same cases driven against the
compiled module (fastinfer._core.shm) and the pure-Python reference."""
import array
import contextlib
import functools
import math
import os
import pickle
import select

import pytest

from fastinfer._core import shm as compiled
from fastinfer._core.ref import shm as reference
import shm_helpers
from shm_helpers import gave_back, segment_name

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

CRIT, HIGH, NORM, BG = 0, 1, 2, 3


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=4, deployments=((2, 8, 2),), n_counters=4,
                             n_histograms=2, bounds=(0.1, 0.5, 1.0))


def readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


# ---------------------------------------------------------------- admission
def test_fast_path_fills_then_refuses(make):
    seg = make(deployments=[(3, 4, 0)])
    a = seg.admission(0)
    assert (a.max_concurrency, a.queue_capacity) == (3, 4)
    assert [a.try_acquire(0), a.try_acquire(1), a.try_acquire(0)] == [True, True, True]
    assert a.try_acquire(2) is False
    assert a.in_flight == 3 and a.queue_depth == 0
    assert a.held_by(0) == 2 and a.held_by(1) == 1
    assert a.release(0) == -1          # nobody waiting: no wake
    assert a.in_flight == 2 and a.held_by(0) == 1
    assert a.try_acquire(3) is True
    for w in (0, 1, 3):
        a.release(w)
    assert a.in_flight == 0
    with pytest.raises(RuntimeError):
        a.release(0)                   # holds nothing: no double release
    assert a.in_flight == 0
    with pytest.raises(IndexError):
        a.try_acquire(4)


def test_enqueue_grants_now_when_a_slot_is_free(make, impl):
    seg = make(deployments=[(1, 2, 0)])
    a = seg.admission(0)
    assert a.enqueue(0, NORM) == impl.GRANTED_NOW == -2
    assert a.in_flight == 1 and a.held_by(0) == 1 and a.queue_depth == 0
    t = a.enqueue(1, NORM)
    assert t >= 0 and a.queue_depth == 1
    with pytest.raises(ValueError):
        a.enqueue(1, 4)


def test_queue_full_returns_minus_one(make, impl):
    seg = make(deployments=[(1, 2, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    assert a.enqueue(1, BG) >= 0
    assert a.enqueue(1, CRIT) >= 0
    assert a.enqueue(2, CRIT) == impl.QUEUE_FULL == -1
    assert a.queue_depth == 2


def test_zero_capacity_queue(make):
    seg = make(deployments=[(1, 0, 0)])
    a = seg.admission(0)
    assert a.enqueue(0, CRIT) == -2
    assert a.enqueue(1, CRIT) == -1


def test_try_acquire_does_not_jump_the_queue(make):
    seg = make(deployments=[(1, 4, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    t = a.enqueue(1, BG)
    assert a.try_acquire(2) is False
    assert a.release(0) == 1           # the slot went straight to the waiter
    assert a.in_flight == 1 and a.queue_depth == 0
    assert a.try_acquire(2) is False   # ... so there is still none free
    assert a.take_granted(1) == [t]
    assert a.held_by(1) == 1
    a.release(1)
    assert a.try_acquire(2) is True


def test_priority_order_then_fifo(make):
    seg = make(n_workers=4, deployments=[(1, 16, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    order = [(1, BG), (2, NORM), (3, HIGH), (1, CRIT), (2, NORM), (3, CRIT), (1, HIGH), (2, BG)]
    tickets = [a.enqueue(w, p) for w, p in order]
    assert all(t >= 0 for t in tickets)
    assert a.queue_depth_by_priority() == (2, 2, 2, 2)
    expected = sorted(range(len(order)), key=lambda i: (order[i][1], i))
    got = []
    holder = 0
    for _ in order:
        woken = a.release(holder)
        granted = a.take_granted(woken)
        assert len(granted) == 1
        got.append(tickets.index(granted[0]))
        holder = woken
    assert got == expected
    assert a.queue_depth == 0 and a.in_flight == 1
    a.release(holder)
    assert a.in_flight == 0


def test_cancel_before_and_after_grant(make):
    seg = make(deployments=[(1, 4, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    t1 = a.enqueue(1, NORM)
    t2 = a.enqueue(2, NORM)
    assert a.cancel(t1) is True
    assert a.queue_depth == 1 and a.queue_depth_by_priority() == (0, 0, 1, 0)
    with pytest.raises(ValueError):
        a.cancel(t1)                   # stale: cannot cancel twice
    assert a.release(0) == 2           # t1 was removed, so t2 gets it
    assert a.cancel(t2) is False       # already granted: the caller owns the slot
    assert a.held_by(2) == 1
    assert a.take_granted(2) == []     # a cancelled grant is not returned again
    assert a.in_flight == 1
    a.release(2)
    assert a.in_flight == 0
    with pytest.raises(ValueError):
        a.cancel(t2)
    with pytest.raises(ValueError):
        a.cancel(123456789)


def test_stale_ticket_cannot_cancel_a_new_entry(make):
    seg = make(deployments=[(1, 1, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    t1 = a.enqueue(1, NORM)
    assert a.cancel(t1) is True
    t2 = a.enqueue(2, NORM)            # (compiled: reuses the same pool entry)
    assert t2 != t1
    with pytest.raises(ValueError):
        a.cancel(t1)
    assert a.queue_depth == 1
    assert a.cancel(t2) is True


@contextlib.contextmanager
def wake_fds(seg, n):
    """``n`` workers of ``seg`` registered, each with its wake eventfd (yielded, closed after)."""
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(n)]
    try:
        for w, fd in enumerate(fds):
            seg.register_worker(w, os.getpid(), fd)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def test_release_wakes_the_best_waiters_fd(make):
    seg = make(n_workers=4, deployments=[(1, 8, 0)])
    with wake_fds(seg, 4) as fds:
        a = seg.admission(0)
        assert a.try_acquire(0)
        t_bg = a.enqueue(1, BG)
        t_hi = a.enqueue(2, HIGH)
        assert a.take_granted(2) == []
        assert not any(readable(fd) for fd in fds)
        assert a.release(0) == 2
        assert [readable(fd) for fd in fds] == [False, False, True, False]
        assert os.eventfd_read(fds[2]) == 1
        assert a.take_granted(2) == [t_hi]
        assert a.take_granted(2) == []
        assert a.release(2) == 1
        assert readable(fds[1]) and os.eventfd_read(fds[1]) == 1
        assert a.take_granted(1) == [t_bg]
        assert a.release(1) == -1
        assert not any(readable(fd) for fd in fds)


def test_reserved_slots_count_against_the_limit_and_pass_to_waiters_when_given_back(make):
    """A reload's new generation counts the old one's requests in flight (``reserve``): they take
    slots no worker holds, never past the limit nor ahead of a waiter, and each one given back
    (``unreserve``) goes to the best waiter, as a released slot does."""
    seg = make(n_workers=2, deployments=[(3, 8, 0)])
    with wake_fds(seg, 2) as fds:
        a = seg.admission(0)
        assert a.try_acquire(0)
        assert a.reserve(5) == 2                     # what is left of the limit, no more
        assert a.in_flight == 3 and a.held_by(0) == 1 and a.held_by(1) == 0
        assert a.try_acquire(1) is False
        t = a.enqueue(1, NORM)
        assert t >= 0 and a.reserve(1) == 0          # never ahead of a waiter
        a.unreserve(1)                               # the waiter gets the slot
        assert readable(fds[1]) and os.eventfd_read(fds[1]) == 1 and a.take_granted(1) == [t]
        assert a.in_flight == 3 and a.queue_depth == 0
        a.unreserve(1)                               # nobody waits: the slot is free
        assert a.in_flight == 2 and a.try_acquire(0)
        for w in (0, 0, 1):
            a.release(w)
        assert a.in_flight == 0


def test_wake_through_a_pipe(make):
    seg = make(n_workers=2, deployments=[(1, 2, 0)])
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        seg.register_worker(1, os.getpid(), w)
        a = seg.admission(0)
        assert a.try_acquire(0)
        t = a.enqueue(1, NORM)
        assert a.release(0) == 1
        assert os.read(r, 64) == (1).to_bytes(8, "little")
        assert a.take_granted(1) == [t]
    finally:
        os.close(r)
        os.close(w)


def test_take_granted_returns_grant_order(make):
    seg = make(n_workers=3, deployments=[(3, 8, 0)])
    a = seg.admission(0)
    for _ in range(3):
        assert a.try_acquire(0)
    ts = [a.enqueue(1, p) for p in (BG, CRIT, NORM)]
    a.release(0)
    a.release(0)
    a.release(0)
    assert a.take_granted(1) == [ts[1], ts[2], ts[0]]
    assert a.held_by(1) == 3 and a.in_flight == 3


def test_reclaim_worker_single_process(make):
    seg = make(n_workers=4, deployments=[(2, 8, 1), (1, 4, 0)])
    a, a2 = seg.admission(0), seg.admission(1)
    b = seg.breaker(0, 0)
    b.configure(1, 0.0, 1.0, 2)
    b.record_failure(3)
    assert a.try_acquire(1) and a.try_acquire(2)
    t_dead_granted = a.enqueue(1, CRIT)
    a.release(2)                       # -> granted to worker 1, not taken
    t_dead_wait = a.enqueue(1, CRIT)
    t_other = a.enqueue(2, NORM)
    assert a2.try_acquire(1)
    assert b.check(1) == 2
    assert a.queue_depth == 2 and a.in_flight == 2
    got = seg.reclaim_worker(1)
    # slots: 1 held + 1 granted-untaken in dep 0, 1 in dep 1; tickets: 1 granted + 1 waiting
    assert gave_back(got, slots=3, tickets=2, probes=1)
    assert a.take_granted(2) == [t_other]
    assert a.in_flight == 1 and a.queue_depth == 0 and a.held_by(1) == 0
    assert a2.in_flight == 0
    with pytest.raises(ValueError):
        a.cancel(t_dead_wait)
    with pytest.raises(ValueError):
        a.cancel(t_dead_granted)
    assert b.probes_in_flight == 0
    assert gave_back(seg.reclaim_worker(1))


# ---------------------------------------------------------------- breaker
def test_breaker_opens_after_exactly_threshold(make, impl):
    seg = make()
    b = seg.breaker(0, 1)
    b.configure(3, 10.0, 60.0, 1)
    assert b.state == impl.CLOSED and b.check(0) == impl.ALLOWED
    b.record_failure(0)
    b.record_failure(1)
    assert b.consecutive_failures == 2 and b.state == 0 and b.check(0) == 0
    b.record_success(0)                # a 4xx counts as a success: resets
    assert b.consecutive_failures == 0
    b.record_failure(0)
    b.record_failure(0)
    assert b.check(2) == 0
    b.record_failure(2)
    assert b.state == impl.OPEN and b.check(0) == impl.REJECTED
    assert 9.0 < b.retry_after_s <= 10.0
    assert b.transitions == (0, 1, 0)
    b.record_failure(0)                # failures while open are not counted again
    b.record_success(0)                # nor do non-probe successes close it
    assert b.state == 1 and b.transitions == (0, 1, 0)
    assert seg.breaker(0, 0).state == 0   # the other replica is untouched


T0 = 10**15            # a test clock (ns): breaker timing is stepped exactly, never slept
MS = 10**6


def test_breaker_half_open_probes_and_close(make, impl):
    seg = make()
    seg.set_test_clock(T0)
    b = seg.breaker(0, 0)
    b.configure(1, 0.05, 1.0, 2)
    b.record_failure(0)
    assert b.check(0) == 1 and b.retry_after_s == pytest.approx(0.05)
    seg.set_test_clock(T0 + 50 * MS - 1)    # open until the last nanosecond of open_s
    assert b.check(0) == 1 and b.state == impl.OPEN and b.retry_after_s > 0
    seg.set_test_clock(T0 + 50 * MS)
    assert b.retry_after_s == 0.0
    assert b.state == impl.HALF_OPEN
    assert [b.check(w) for w in (0, 1, 2, 3)] == [2, 2, 1, 1]   # exactly half_open_probes
    assert b.probes_in_flight == 2
    b.release_probe(1)                 # client left: the probe comes back
    assert b.check(3) == 2
    assert b.check(2) == 1
    b.record_success(0, probe=True)
    assert b.state == impl.CLOSED and b.consecutive_failures == 0
    assert b.check(2) == 0
    assert b.transitions == (1, 1, 1)
    b.record_success(3, probe=True)    # late probe after close: harmless
    assert b.probes_in_flight == 0 and b.state == 0


def test_breaker_probe_failure_doubles_capped(make):
    seg = make()
    now = T0
    seg.set_test_clock(now)
    b = seg.breaker(0, 0)
    b.configure(2, 0.1, 0.3, 1)
    b.record_failure(0)
    b.record_failure(0)
    assert b.retry_after_s == pytest.approx(0.1)
    for open_ms in (100, 200, 300):         # each failed probe doubles the open time, capped at 0.3 s
        seg.set_test_clock(now + open_ms * MS - 1)
        assert b.check(0) == 1, open_ms     # still open a nanosecond before
        now += open_ms * MS
        seg.set_test_clock(now)
        assert b.check(0) == 2, open_ms     # then one probe
        b.record_failure(0, probe=True)
        assert b.state == 1
        assert b.retry_after_s == pytest.approx(min(2 * open_ms, 300) / 1000), open_ms
    assert b.transitions == (0, 4, 3)
    b.reset()
    assert b.state == 0 and b.transitions == (1, 4, 3)
    b.record_failure(0)
    b.record_failure(0)                # reopen uses open_s again, not the doubled time
    assert b.retry_after_s == pytest.approx(0.1)


def test_breaker_force_open_and_reset(make, impl):
    seg = make()
    b = seg.breaker(0, 0)
    b.configure(5, 0.05, 1.0, 1)
    b.force_open(30.0)
    assert b.state == impl.OPEN and b.check(0) == 1
    assert 29.0 < b.retry_after_s <= 30.0
    b.force_open(60.0)                 # already open: extended, not a new transition
    assert b.transitions == (0, 1, 0)
    b.reset()
    assert b.state == 0 and b.check(0) == 0 and b.retry_after_s == 0.0
    assert b.transitions == (1, 1, 0)
    b.reset()                          # already closed: no transition
    assert b.transitions == (1, 1, 0)
    b.force_open(0.0)                  # open with nothing left to wait: half-open
    assert b.state == impl.HALF_OPEN and b.check(1) == 2
    b.force_open(10.0)                 # operator re-opens while a probe is out
    b.record_success(1, probe=True)    # the stale probe's verdict must not close it
    assert b.state == impl.OPEN and b.probes_in_flight == 0
    with pytest.raises(ValueError):
        b.force_open(-1)
    with pytest.raises(ValueError):
        b.configure(0, 1.0, 2.0, 1)
    with pytest.raises(ValueError):
        b.configure(1, 3.0, 2.0, 1)


# ---------------------------------------------------------------- counters / histograms
def test_counters(make):
    seg = make(n_counters=5)
    c = seg.counters
    c.add(0)
    c.add(0, 41)
    c.add(1, -3)
    c.set(2, 7)
    c.set(3, 2**63 - 1)
    c.add(3, 1)                        # int64 wraps like the hardware does
    assert [c.get(i) for i in range(5)] == [42, -3, 7, -2**63, 0]
    snap = c.snapshot()
    assert isinstance(snap, array.array) and snap.typecode == "q"      # a plain buffer: no numpy
    assert snap.tolist() == [42, -3, 7, -2**63, 0]
    c.add(0)
    assert snap[0] == 42               # a copy
    with pytest.raises(IndexError):
        c.add(5)
    with pytest.raises(IndexError):
        c.get(-1)
    with pytest.raises(OverflowError):
        c.add(0, 2**63)


def test_histogram_le_boundaries(make):
    seg = make(n_histograms=2, bounds=(0.1, 0.5, 1.0))
    h = seg.histograms
    for v in (0.1, 0.1000001, 0.5, 1.0, 1.0000001, -2.0, 0.0, 7.25):
        h.observe(1, v)
    cum, count, total = h.snapshot(1)
    # le=0.1: {0.1, -2.0, 0.0}; le=0.5: +{0.1000001, 0.5}; le=1: +{1.0}; +Inf: +{1.0000001, 7.25}
    assert cum == [3, 5, 6, 8]
    assert count == 8
    assert math.isclose(total, 0.1 + 0.1000001 + 0.5 + 1.0 + 1.0000001 - 2.0 + 0.0 + 7.25, abs_tol=1e-8)
    assert h.snapshot(0) == ([0, 0, 0, 0], 0, 0.0)
    h.observe(0, 0.001)
    h.observe(0, 0.002)
    assert h.snapshot(0) == ([2, 2, 2, 2], 2, 0.003)
    with pytest.raises(ValueError):
        h.observe(0, float("nan"))
    with pytest.raises(ValueError):
        h.observe(0, float("inf"))
    with pytest.raises(IndexError):
        h.observe(2, 1.0)


def test_histogram_without_bounds(make):
    seg = make(n_histograms=1, bounds=())
    seg.histograms.observe(0, 3.5)
    assert seg.histograms.snapshot(0) == ([1], 1, 3.5)


# ---------------------------------------------------------------- layout / segment
def test_layout_validation_and_pickle(impl):
    lay = impl.Layout(2, [(4, 16, 2), (1, 0, 1)], 10, 3, [0.005, 0.01, 1.0])
    again = pickle.loads(pickle.dumps(lay))
    assert again == lay and again.deployments == [(4, 16, 2), (1, 0, 1)]
    for bad in (dict(n_workers=0), dict(deployments=[(0, 1, 1)]), dict(deployments=[(1, -1, 1)]),
                dict(bucket_bounds=[1.0, 0.5]), dict(bucket_bounds=[float("inf")]),
                dict(deployments=[(1 << 23, 1 << 23, 1)])):
        kw = dict(n_workers=2, deployments=[(1, 1, 1)], n_counters=1, n_histograms=1, bucket_bounds=[1.0])
        kw.update(bad)
        with pytest.raises(ValueError):
            impl.Layout(**kw)


def test_one_layout_for_both_implementations():
    # one class, so a Layout made for either module is equal to, and hashes like, the other's
    assert compiled.Layout is reference.Layout
    a = compiled.Layout(2, [(4, 16, 2)], 1, 1, [1.0])
    b = reference.Layout(2, [(4, 16, 2)], 1, 1, [1.0])
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert a != compiled.Layout(3, [(4, 16, 2)], 1, 1, [1.0])


def test_create_attach_share_state(make, impl):
    seg = make(deployments=[(2, 4, 1)])
    other = impl.Segment.attach(seg.name)
    try:
        assert other.layout == seg.layout
        seg.counters.add(1, 5)
        assert other.counters.get(1) == 5
        assert seg.admission(0).try_acquire(0)
        assert other.admission(0).in_flight == 1
        with pytest.raises(FileExistsError):
            impl.Segment.create(seg.name, seg.layout)
        assert other.admission(0).in_flight == 1   # the failed create touched nothing
    finally:
        other.close()
    with pytest.raises(FileNotFoundError):
        impl.Segment.attach(segment_name("fi-test-missing"))
