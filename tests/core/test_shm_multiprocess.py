"""The compiled shared-memory core across REAL processes (os.fork): slots are
never over-granted, waiters are woken through their eventfd (no polling),
priority order holds host-wide, a SIGKILLed worker's slots / tickets / probes (and its
key slots, replica in-flight counts and leases)
come back through reclaim_worker, a lock holder's death is survived (robust
mutex), and concurrent counters are exact.

Every wait is bounded: a bug fails a test rather than hanging it."""
import functools
import os
import random
import select
import signal
import time

import pytest

from fastinfer._core import shm
from shm_helpers import SegmentMaker, fork, gave_back, wait_all

CRIT, HIGH, NORM, BG = 0, 1, 2, 3
WAIT_S = 10.0


@pytest.fixture
def make():
    maker = SegmentMaker(shm, "fi-mp")
    yield functools.partial(maker, n_counters=8, n_histograms=1, bounds=(0.001, 0.01, 0.1))
    maker.cleanup()


def wait_for_grant(adm, worker, efd, ticket):
    """Block on the worker's eventfd (select, no polling of the segment) until
    ``ticket`` has been granted. Returns the number of wakeups used."""
    wakes = 0
    deadline = time.monotonic() + WAIT_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([efd], [], [], left)[0]:
            raise TimeoutError(f"worker {worker}: ticket {ticket} not granted within {WAIT_S}s")
        try:
            os.eventfd_read(efd)
        except BlockingIOError:
            continue
        wakes += 1
        if ticket in adm.take_granted(worker):
            return wakes


def eventfds(n):
    return [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(n)]


def close_all(fds):
    for fd in fds:
        os.close(fd)


# ---------------------------------------------------------------- stress
INSIDE, VIOLATIONS, DONE, WAITED, TIMEOUTS, CANCEL_LOST, CANCEL_WON = range(7)


def _stress_child(seg, w, efd, cycles, max_c, go_r):
    seg.register_worker(w, os.getpid(), efd)
    a, c = seg.admission(0), seg.counters
    rng = random.Random(w * 7919)
    assert os.read(go_r, 1) == b"g"              # all start together
    for _ in range(cycles):
        have = a.try_acquire(w)
        if not have:
            t = a.enqueue(w, rng.randrange(4))
            if t == shm.GRANTED_NOW:
                have = True
            elif t >= 0 and rng.random() < 0.2:
                # give up at once: races against the grant
                if a.cancel(t):
                    c.add(CANCEL_WON)
                    continue
                c.add(CANCEL_LOST)          # granted meanwhile: we own it
            elif t >= 0:
                try:
                    wait_for_grant(a, w, efd, t)
                except TimeoutError:
                    c.add(TIMEOUTS)
                    raise
                c.add(WAITED)
            else:
                raise AssertionError(f"unexpected enqueue result {t}")
        c.add(INSIDE)
        in_flight, waiting = a.counts()           # one atomic load: a consistent pair
        if c.get(INSIDE) > max_c or in_flight > max_c or (waiting and in_flight < max_c):
            c.add(VIOLATIONS)                     # over-granted, or a waiter beside a free slot
        if rng.random() < 0.5:                  # hold the slot a moment (2 cores: sleep to let
            time.sleep(0.00005)                 # the others run into a full house)
        else:
            for _ in range(rng.randrange(30)):
                pass
        c.add(INSIDE, -1)
        a.release(w)
        c.add(DONE)


def test_stress_slots_never_over_granted(make):
    n_proc, cycles, max_c = 4, 3000, 3
    seg = make(n_proc, [(max_c, 64, 0)])
    efds = eventfds(n_proc)
    go_r, go_w = os.pipe()
    try:
        pids = [fork(_stress_child, seg, w, efds[w], cycles, max_c, go_r) for w in range(n_proc)]
        os.write(go_w, b"g" * n_proc)
        assert wait_all(pids, timeout=90) == [0] * n_proc
    finally:
        close_all(efds + [go_r, go_w])
    c, a = seg.counters, seg.admission(0)
    assert c.get(VIOLATIONS) == 0
    assert c.get(TIMEOUTS) == 0
    assert c.get(DONE) + c.get(CANCEL_WON) == n_proc * cycles
    assert c.get(INSIDE) == 0
    assert a.in_flight == 0 and a.queue_depth == 0
    assert a.queue_depth_by_priority() == (0, 0, 0, 0)
    assert [a.held_by(w) for w in range(n_proc)] == [0] * n_proc
    assert all(a.take_granted(w) == [] for w in range(n_proc))
    assert c.get(WAITED) > 0, "the queue path was never exercised"
    print(f"waited={c.get(WAITED)} cancel_won={c.get(CANCEL_WON)} cancel_lost={c.get(CANCEL_LOST)}")


# ---------------------------------------------------------------- priority across processes
def _ordered_child(seg, w, efd, prio, go_r, ready_w, result_w):
    seg.register_worker(w, os.getpid(), efd)
    a = seg.admission(0)
    assert os.read(go_r, 1) == b"g"
    t = a.enqueue(w, prio)
    assert t >= 0, t
    os.write(ready_w, b"r")
    wait_for_grant(a, w, efd, t)                 # blocks in select() until woken
    assert a.in_flight == 1
    os.write(result_w, bytes([w]))
    a.release(w)                                 # hands over to the next best, in another process


def test_priority_order_and_eventfd_wakeups_across_processes(make):
    prios = {1: BG, 2: NORM, 3: CRIT, 4: NORM, 5: CRIT, 6: HIGH}   # worker -> priority, arrival order
    seg = make(7, [(1, 16, 0)])
    efds = eventfds(7)
    a = seg.admission(0)
    assert a.try_acquire(0)                       # the parent (worker 0) holds the only slot
    res_r, res_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pids, gos = [], []
    try:
        for w, p in prios.items():
            go_r, go_w = os.pipe()
            pids.append(fork(_ordered_child, seg, w, efds[w], p, go_r, ready_w, res_w))
            gos.append(go_w)
        for go_w in gos:                          # enqueue one at a time: fixed arrival order
            os.write(go_w, b"g")
            assert select.select([ready_r], [], [], WAIT_S)[0]
            assert os.read(ready_r, 1) == b"r"
        assert a.queue_depth == 6 and a.queue_depth_by_priority() == (2, 1, 2, 1)
        expected = [3, 5, 6, 2, 4, 1]             # critical, high, normal, background; FIFO within
        assert a.release(0) == expected[0]
        got = b""
        deadline = time.monotonic() + WAIT_S
        while len(got) < 6 and time.monotonic() < deadline:
            if select.select([res_r], [], [], 0.5)[0]:
                got += os.read(res_r, 6 - len(got))
        assert list(got) == expected
        assert wait_all(pids, 30) == [0] * 6
    finally:
        close_all(efds + [res_r, res_w, ready_r, ready_w] + gos)
    assert a.in_flight == 0 and a.queue_depth == 0


# ---------------------------------------------------------------- death of a worker
def _doomed_child(seg, w, efd, ready_w):
    seg.register_worker(w, os.getpid(), efd)
    a = seg.admission(0)
    assert a.try_acquire(w) and a.try_acquire(w)          # both slots
    assert a.enqueue(w, CRIT) >= 0 and a.enqueue(w, CRIT) >= 0   # two tickets, ahead of everyone
    assert seg.breaker(0, 0).check(w) == 2                  # and the only half-open probe
    os.write(ready_w, b"r")
    time.sleep(60)


def _victim_waiter(seg, w, efd, queued_w, result_w):
    seg.register_worker(w, os.getpid(), efd)
    a = seg.admission(0)
    t = a.enqueue(w, NORM)
    assert t >= 0
    os.write(queued_w, b"q")
    wait_for_grant(a, w, efd, t)
    os.write(result_w, b"G")
    time.sleep(0.05)
    assert a.release(w) == -1


def test_sigkilled_worker_is_reclaimed(make):
    seg = make(4, [(2, 8, 1)])
    efds = eventfds(4)
    a, b = seg.admission(0), seg.breaker(0, 0)
    b.configure(1, 0.0, 1.0, 1)
    b.record_failure(0)                                     # open for 0 s: half-open at once
    ready_r, ready_w = os.pipe()
    res_r, res_w = os.pipe()
    try:
        doomed = fork(_doomed_child, seg, 1, efds[1], ready_w)
        assert select.select([ready_r], [], [], WAIT_S)[0] and os.read(ready_r, 1) == b"r"
        waiter = fork(_victim_waiter, seg, 2, efds[2], ready_w, res_w)
        assert select.select([ready_r], [], [], WAIT_S)[0] and os.read(ready_r, 1) == b"q"
        seg.register_worker(3, os.getpid(), efds[3])
        t3 = a.enqueue(3, BG)
        assert t3 >= 0
        assert a.in_flight == 2 and a.queue_depth == 4
        assert b.check(3) == 1                              # probe taken by the doomed worker

        os.kill(doomed, signal.SIGKILL)
        assert wait_all([doomed], 10) == [-signal.SIGKILL]
        assert a.queue_depth == 4                           # nothing moves by itself...
        got = seg.reclaim_worker(1)                         # ... until the supervisor reclaims
        assert gave_back(got, slots=2, tickets=2, probes=1)

        # the two freed slots went to the two remaining waiters, best first
        assert select.select([res_r], [], [], WAIT_S)[0] and os.read(res_r, 1) == b"G"
        assert select.select([efds[3]], [], [], WAIT_S)[0]
        assert os.eventfd_read(efds[3]) == 1
        assert a.take_granted(3) == [t3]
        assert wait_all([waiter], 10) == [0]
        assert a.queue_depth == 0 and a.in_flight == 1      # only worker 3's slot remains
        assert a.held_by(1) == 0 and a.held_by(3) == 1
        assert a.release(3) == -1
        assert a.in_flight == 0
        assert b.probes_in_flight == 0 and b.check(3) == 2  # the probe came back
        b.record_success(3, probe=True)
        assert b.state == 0
    finally:
        close_all(efds + [ready_r, ready_w, res_r, res_w])


def _doomed_holder(seg, w, ready_w):
    """Holds one of everything a worker can hold, then waits to be killed."""
    assert seg.admission(0).try_acquire(w)
    k = seg.key_concurrency(0)
    assert k.try_acquire(w) and k.try_acquire(w)
    assert seg.key_concurrency(1).try_acquire(w)
    r = seg.replicas(0)
    assert r.pick_and_start(w, 1) >= 0 and r.pick_and_start(w, 1) >= 0
    r.start(w, 2)
    assert seg.lease(0).try_hold(w, 3600.0) and seg.lease(3).try_hold(w, 3600.0)
    os.write(ready_w, b"r")
    time.sleep(60)


def test_sigkilled_worker_gives_back_keys_replica_load_and_leases(make):
    seg = make(3, [(4, 4, 3)], key_max_concurrency=[2, 0])
    k0, k1, r = seg.key_concurrency(0), seg.key_concurrency(1), seg.replicas(0)
    assert k1.try_acquire(0)                                # the survivors' holdings
    r.start(2, 1)
    assert seg.lease(1).try_hold(2, 3600.0)
    ready_r, ready_w = os.pipe()
    try:
        doomed = fork(_doomed_holder, seg, 1, ready_w)
        assert select.select([ready_r], [], [], WAIT_S)[0] and os.read(ready_r, 1) == b"r"
        os.kill(doomed, signal.SIGKILL)
        assert wait_all([doomed], 10) == [-signal.SIGKILL]
    finally:
        close_all([ready_r, ready_w])
    assert not k0.try_acquire(0)                            # its key is still full ...
    assert not seg.lease(0).try_hold(0, 1.0)                # ... its lease still held
    assert sum(r.in_flight(i) for i in range(3)) == 4
    got = seg.reclaim_worker(1)
    assert gave_back(got, slots=1, key_slots=3, replica_in_flight=3, leases=2)
    assert (k0.in_flight, k1.in_flight) == (0, 1) and k1.held_by(0) == 1
    assert [r.in_flight(i) for i in range(3)] == [0, 1, 0] and r.held_by(2, 1) == 1
    assert seg.lease(1).holder == 2                         # another worker's lease is untouched
    assert seg.lease(0).try_hold(0, 1.0) and seg.lease(3).holder == -1
    assert k0.try_acquire(0) and k0.try_acquire(2) and not k0.try_acquire(2)
    assert seg.admission(0).in_flight == 0


def _die_holding_lock(seg, corrupt):
    seg.admission(0)._debug_lock(corrupt)
    os.kill(os.getpid(), signal.SIGKILL)


def test_lock_holder_death_is_survived_robust_mutex(make):
    seg = make(3, [(1, 4, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    t = a.enqueue(2, NORM)
    # a process dies inside the critical section, half-way through an "enqueue"
    assert wait_all([fork(_die_holding_lock, seg, True)], 10) == [-signal.SIGKILL]
    assert a.queue_depth == 2                               # the phantom waiter it left
    assert a.release(0) == 2                                # lock recovered (EOWNERDEAD), repaired
    assert a.queue_depth == 0 and a.queue_depth_by_priority() == (0, 0, 0, 0)
    assert a.take_granted(2) == [t]
    assert a.release(2) == -1
    assert a.in_flight == 0
    # and once more, with nothing to repair, on the enqueue path
    assert wait_all([fork(_die_holding_lock, seg, False)], 10) == [-signal.SIGKILL]
    assert a.enqueue(1, NORM) == shm.GRANTED_NOW
    assert a.release(1) == -1 and a.in_flight == 0


def test_a_failed_repair_never_leaves_the_mutex_held(make):
    """_lock used to raise with the mutex held when the repair after EOWNERDEAD failed:
    every later call on the deployment then hung. Now the repair failure is raised with
    the mutex released and the structure still marked dirty, and the next call repairs."""
    seg = make(3, [(1, 4, 0)])
    a = seg.admission(0)
    assert a.try_acquire(0)
    t = a.enqueue(2, NORM)
    assert wait_all([fork(_die_holding_lock, seg, True)], 10) == [-signal.SIGKILL]
    shm._inject_repair_failures(1)
    with pytest.raises(RuntimeError, match="injected repair failure"):
        a.release(0)
    assert not a._debug_is_locked()
    assert a.held_by(0) == 1 and a.in_flight == 1           # not released: worker 0 still owns it
    assert wait_all([fork(_enqueue_in_child, seg)], 10) == [0]   # another process can lock ...
    # ... and repaired it: the phantom waiter is gone; the real one and the child's wait
    assert a.queue_depth == 2 and a.queue_depth_by_priority() == (0, 0, 2, 0)
    assert a.release(0) == 2
    assert a.take_granted(2) == [t]
    assert a.release(2) == 1
    assert len(a.take_granted(1)) == 1 and a.release(1) == -1
    assert a.in_flight == 0 and a.queue_depth == 0


def _enqueue_in_child(seg):
    assert seg.admission(0).enqueue(1, NORM) >= 0


# ---------------------------------------------------------------- breaker across processes
def _probe_child(seg, w, go_r):
    b, c = seg.breaker(0, 0), seg.counters
    assert os.read(go_r, 1) == b"g"
    deadline = time.monotonic() + 0.4
    probes = allowed = 0
    while time.monotonic() < deadline:       # starts while open, crosses into half-open
        r = b.check(w)
        probes += r == 2
        allowed += r == 0
    c.add(0, probes)
    c.add(1, allowed)


def test_half_open_admits_exactly_n_probes_host_wide(make):
    n_proc = 6
    seg = make(n_proc, [(1, 1, 1)])
    b = seg.breaker(0, 0)
    b.configure(1, 0.1, 1.0, 2)
    go_r, go_w = os.pipe()
    try:
        pids = [fork(_probe_child, seg, w, go_r) for w in range(n_proc)]
        b.record_failure(0)
        os.write(go_w, b"g" * n_proc)
        assert wait_all(pids, 30) == [0] * n_proc
    finally:
        os.close(go_r)
        os.close(go_w)
    assert seg.counters.get(0) == 2
    assert seg.counters.get(1) == 0
    assert b.probes_in_flight == 2 and b.state == 2
    assert b.transitions == (0, 1, 1)


def _open_from_child(seg, w):
    seg.breaker(0, 0).record_failure(w)


def test_failures_in_one_process_open_the_breaker_for_all(make):
    seg = make(4, [(1, 1, 1)])
    b = seg.breaker(0, 0)
    b.configure(3, 30.0, 60.0, 1)
    assert wait_all([fork(_open_from_child, seg, w) for w in (1, 2, 3)], 20) == [0, 0, 0]
    assert b.state == 1 and b.check(0) == 1 and b.transitions == (0, 1, 0)


# ---------------------------------------------------------------- counters / histograms
def _count_child(seg, n):
    c, h = seg.counters, seg.histograms
    for i in range(n):
        c.add(0)
        c.add(1, 3)
        c.add(2, -1)
        h.observe(0, 0.001 * (i % 4))     # 0, 1, 2, 3 ms
    c.set(3, 42)


def test_concurrent_counters_and_histograms_are_exact(make):
    n_proc, n = 4, 20000
    seg = make(n_proc, [(1, 1, 0)], n_counters=4)
    assert wait_all([fork(_count_child, seg, n) for _ in range(n_proc)], 60) == [0] * n_proc
    assert seg.counters.snapshot().tolist() == [n_proc * n, 3 * n_proc * n, -n_proc * n, 42]
    cum, count, total = seg.histograms.snapshot(0)
    q = n_proc * n // 4
    assert cum == [2 * q, 4 * q, 4 * q, 4 * q] and count == n_proc * n
    assert total == pytest.approx(q * (0.001 + 0.002 + 0.003), abs=1e-6)


def _inherited_child(seg):
    seg.counters.add(0, 7)
    other = shm.Segment.attach(seg.name)
    other.counters.add(0, 1)
    other.close()


def test_inherited_and_attached_segments_in_a_child(make):
    seg = make(1, [(1, 1, 0)], n_counters=1)
    assert wait_all([fork(_inherited_child, seg)], 10) == [0]
    assert seg.counters.get(0) == 8


# ---------------------------------------------------------------- the gateway's pattern: loop.add_reader
def _asyncio_waiter(seg, w, efd, queued_w, result_w):
    import asyncio
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    seg.register_worker(w, os.getpid(), efd)
    a = seg.admission(0)
    pending = {}                                   # ticket -> future

    def on_wake():                                 # the wake fd fired: collect grants
        try:
            os.eventfd_read(efd)
        except BlockingIOError:
            return
        for t in a.take_granted(w):
            fut = pending.pop(t, None)
            if fut is not None and not fut.done():
                fut.set_result(True)
            else:
                a.release(w)                       # nobody waits for it any more

    async def main():
        loop.add_reader(efd, on_wake)
        t = a.enqueue(w, HIGH)
        assert t >= 0
        pending[t] = loop.create_future()
        os.write(queued_w, b"q")
        await asyncio.wait_for(pending[t], WAIT_S)
        os.write(result_w, b"G")
        assert a.release(w) == -1
        loop.remove_reader(efd)

    loop.run_until_complete(main())
    loop.close()


def test_wakeup_through_an_event_loop_reader(make):
    seg = make(2, [(1, 4, 0)])
    efds = eventfds(2)
    a = seg.admission(0)
    assert a.try_acquire(0)
    q_r, q_w = os.pipe()
    res_r, res_w = os.pipe()
    try:
        pid = fork(_asyncio_waiter, seg, 1, efds[1], q_w, res_w)
        assert select.select([q_r], [], [], WAIT_S)[0] and os.read(q_r, 1) == b"q"
        assert a.release(0) == 1
        assert select.select([res_r], [], [], WAIT_S)[0] and os.read(res_r, 1) == b"G"
        assert wait_all([pid], 10) == [0]
    finally:
        close_all(efds + [q_r, q_w, res_r, res_w])
    assert a.in_flight == 0 and a.queue_depth == 0
