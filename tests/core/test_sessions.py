"""The session affinity table in the shared segment (issue 9): session key -> replica with an
idle TTL, first binding wins, re-pin, backend session state moved by compare-and-set (so a
backend close happens exactly once), an expiring reaper, LRU eviction when full; compiled
against the reference, and real processes, one of them killed mid-operation."""
import functools
import os
import pickle
import random
import signal
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastinfer._core import shm as compiled
from fastinfer._core.constants import SESSION_CLOSING, SESSION_NONE, SESSION_OPEN, SESSION_OPENING
import shm_helpers
from shm_helpers import T0, SegmentMaker, fork, replay, wait_all

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

S = 10**9


def key(i: int) -> bytes:
    return i.to_bytes(16, "little") if i >= 0 else (-i).to_bytes(16, "big")


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=2, deployments=[(1, 0, 3), (1, 0, 2)], n_counters=0,
                             n_histograms=0, bounds=())


def table(make, max_sessions=256):
    seg = make(max_sessions=max_sessions)
    seg.set_test_clock(T0)
    return seg, seg.sessions


def test_first_binding_wins_and_touch_keeps_it_alive(make):
    seg, t = table(make)
    k = key(1)
    assert t.touch(k) == -1 and t.get(k) is None
    assert t.bind(k, 0, 1, 10.0) == (1, None)
    assert t.bind(k, 0, 2, 10.0) == (1, None)          # the first binding wins
    assert t.touch(k) == 1 and t.occupancy == 1
    seg.set_test_clock(T0 + 9 * S)
    assert t.touch(k) == 1                              # used: 10 s more from now
    seg.set_test_clock(T0 + 18 * S)
    info = t.get(k)
    assert (info.key, info.deployment, info.replica, info.idle_s, info.ttl_s) == (k, 0, 1, 9.0, 10.0)
    assert not info.expired
    seg.set_test_clock(T0 + 19 * S)
    assert t.touch(k) == -1 and t.get(k).expired        # idle for its TTL: no live binding
    assert t.occupancy == 1                              # ... until reaped or re-bound


def test_a_new_binding_takes_an_expired_ones_place_and_hands_it_back(make):
    seg, t = table(make)
    k = key(2)
    t.bind(k, 1, 0, 5.0)
    assert t.backend_transition(k, SESSION_NONE, SESSION_OPEN, 0)
    seg.set_test_clock(T0 + 5 * S)
    replica, displaced = t.bind(k, 1, 1, 5.0)
    assert replica == 1
    assert (displaced.replica, displaced.backend_state, displaced.backend_replica) == (0, SESSION_OPEN, 0)
    assert t.get(k).backend_state == SESSION_NONE and t.occupancy == 1


def test_rebind_is_a_compare_and_set(make):
    seg, t = table(make)
    k = key(3)
    assert t.rebind(k, 0, 1) == (-1, None)               # nothing bound
    t.bind(k, 0, 0, 30.0)
    assert t.backend_transition(k, SESSION_NONE, SESSION_OPENING, 0)
    assert t.backend_transition(k, SESSION_OPENING, SESSION_OPEN)
    replica, previous = t.rebind(k, 0, 2)                 # replica 0's circuit opened
    assert replica == 2
    assert (previous.replica, previous.backend_state, previous.backend_replica) == (0, SESSION_OPEN, 0)
    assert t.rebind(k, 0, 1) == (2, None)                 # a second worker re-pinning too: the first won
    info = t.get(k)
    assert (info.replica, info.backend_state, info.backend_replica) == (2, SESSION_NONE, -1)
    with pytest.raises(IndexError):
        t.rebind(k, 2, 3)                                 # deployment 0 has 3 replicas
    assert t.touch(k) == 2


def test_backend_session_moves_exactly_once(make):
    seg, t = table(make)
    k = key(4)
    assert not t.backend_transition(k, SESSION_NONE, SESSION_OPENING, 1)   # no binding
    t.bind(k, 0, 1, 30.0)
    wins = [t.backend_transition(k, SESSION_NONE, SESSION_OPENING, 1) for _ in range(3)]
    assert wins == [True, False, False]                   # one opener
    assert t.get(k).backend_replica == 1
    assert t.backend_transition(k, SESSION_OPENING, SESSION_OPEN)
    closes = [t.backend_transition(k, SESSION_OPEN, SESSION_CLOSING) for _ in range(3)]
    assert closes == [True, False, False]                 # one closer
    assert t.backend_transition(k, SESSION_CLOSING, SESSION_NONE)
    assert t.get(k).backend_state == SESSION_NONE and t.get(k).backend_replica == -1
    with pytest.raises(ValueError):
        t.backend_transition(k, SESSION_NONE, 4)
    with pytest.raises(IndexError):
        t.backend_transition(k, SESSION_NONE, SESSION_OPENING, 3)
    assert t.get(k).backend_state == SESSION_NONE


def test_remove_hands_back_what_was_there(make):
    seg, t = table(make)
    k = key(5)
    t.bind(k, 0, 2, 1.0)
    t.backend_transition(k, SESSION_NONE, SESSION_OPEN, 2)
    seg.set_test_clock(T0 + 3 * S)                        # expired, not reaped: still handed back
    info = t.remove(k)
    assert (info.replica, info.backend_state, info.expired) == (2, SESSION_OPEN, True)
    assert t.remove(k) is None and t.occupancy == 0 and t.touch(k) == -1


def test_expire_reaps_in_bounded_batches(make):
    seg, t = table(make, max_sessions=256)
    for i in range(40):
        t.bind(key(i), i % 2, 0, 1.0 if i % 4 else 100.0)   # 30 short-lived, 10 long-lived
    seg.set_test_clock(T0 + 2 * S)
    assert t.occupancy == 40
    got = []
    while True:
        batch = t.expire(max_n=7)
        assert len(batch) <= 7
        if not batch:
            break
        got += batch
    assert sorted(i.key for i in got) == sorted(key(i) for i in range(40) if i % 4)
    assert all(i.expired for i in got) and t.occupancy == 10
    assert t.expire() == []


def test_a_full_stripe_evicts_its_least_recently_used(make):
    seg, t = table(make, max_sessions=42)                 # one stripe: eviction is table-wide LRU
    assert t.capacity == 64 and t.max_sessions == 42
    for i in range(64):
        seg.set_test_clock(T0 + i * S)
        assert t.bind(key(i), 0, i % 3, 1000.0) == (i % 3, None)
    seg.set_test_clock(T0 + 100 * S)
    t.touch(key(0))                                       # 0 is recent again: 1 is the oldest now
    replica, evicted = t.bind(key(64), 0, 1, 1000.0)
    assert replica == 1 and evicted.key == key(1) and t.evictions == 1
    assert t.touch(key(1)) == -1 and t.touch(key(0)) == 0 and t.occupancy == 64
    t.bind(key(65), 1, 1, 0.5)                            # evicts 2, and lives half a second
    seg.set_test_clock(T0 + 101 * S)
    replica, displaced = t.bind(key(66), 0, 0, 1000.0)    # the expired binding goes first, not 3
    assert displaced.key == key(65) and t.evictions == 2  # (an expired one is not counted)
    assert t.touch(key(3)) == 0


def test_capacity_bad_keys_and_no_table(make, impl):
    seg, t = table(make, max_sessions=100)
    assert t.capacity == 192 and t.max_sessions == 100 and t.occupancy == 0 and t.evictions == 0
    with pytest.raises(ValueError):
        t.touch(b"short")
    with pytest.raises(TypeError):
        t.touch("a string key, not bytes")
    with pytest.raises(IndexError):
        t.bind(key(1), 2, 0, 1.0)
    with pytest.raises(IndexError):
        t.bind(key(1), 1, 2, 1.0)
    with pytest.raises(ValueError):
        t.bind(key(1), 0, 0, -1.0)
    assert t.occupancy == 0
    seg, none = table(make, max_sessions=0)
    assert none.capacity == 0 and none.occupancy == 0 and none.expire() == [] and none.entries() == []
    with pytest.raises(ValueError, match="no session table"):
        none.touch(key(1))
    with pytest.raises(ValueError, match="max_sessions"):
        impl.Layout(1, [], 0, 0, [], max_sessions=-1)


def test_entries_and_restore_carry_bindings_into_another_table(make):
    seg, t = table(make)
    t.bind(key(7), 0, 2, 60.0)
    t.backend_transition(key(7), SESSION_NONE, SESSION_OPEN, 2)
    t.bind(key(8), 1, 1, 30.0)
    seg.set_test_clock(T0 + 12 * S)
    seg2, t2 = table(make)
    seg2.set_test_clock(T0 + 500 * S)
    for info in t.entries():
        assert t2.restore(info) is None
    a, b = t2.get(key(7)), t2.get(key(8))
    assert (a.replica, a.backend_state, a.backend_replica, a.idle_s, a.ttl_s) == (2, SESSION_OPEN, 2, 12.0, 60.0)
    assert (b.deployment, b.replica, b.idle_s) == (1, 1, 12.0)
    assert sorted(t.entries()) == sorted(t2.entries())


# ---------------------------------------------------------------- compiled == reference
k_ = st.integers(0, 180)                                  # 180 keys over 2 stripes of 64: evictions
ops = st.one_of(
    st.tuples(st.just("touch"), k_),
    st.tuples(st.just("touch"), k_),
    st.tuples(st.just("bind"), k_, st.integers(0, 1), st.integers(0, 2), st.sampled_from([0.0, 0.5, 3.0, 60.0])),
    st.tuples(st.just("bind"), k_, st.integers(0, 1), st.integers(0, 1), st.sampled_from([0.5, 60.0])),
    st.tuples(st.just("rebind"), k_, st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("remove"), k_),
    st.tuples(st.just("backend"), k_, st.integers(0, 3), st.integers(0, 3), st.integers(-1, 2)),
    st.tuples(st.just("expire"), st.sampled_from([1, 3, 1000])),
    st.tuples(st.just("get"), k_),
    st.tuples(st.just("tick"), st.sampled_from([1, 300, 600, 2000, 4000])),   # ms
    st.tuples(st.just("fill"), k_, st.integers(1, 90), st.sampled_from([0.5, 3.0, 60.0])),  # many binds
)


def run(seg, op):
    kind, *a = op
    t = seg.sessions
    if kind in ("touch", "remove", "get"):
        return getattr(t, kind)(key(a[0]))
    if kind == "bind":
        return t.bind(key(a[0]), *a[1:])
    if kind == "rebind":
        return t.rebind(key(a[0]), *a[1:])
    if kind == "backend":
        return t.backend_transition(key(a[0]), *a[1:])
    if kind == "fill":
        return [t.bind(key(a[0] + j), 0, j % 3, a[2]) for j in range(a[1])]
    reaped = t.expire(*a)
    if reaped:
        event("reaped some")
    return reaped


def observe(seg):
    return seg.sessions.occupancy, seg.sessions.evictions


def same_bindings(c, r):
    assert sorted(c.sessions.entries()) == sorted(r.sessions.entries())
    assert c.sessions._debug_check() == []
    event(f"evictions: {min(c.sessions.evictions, 1)}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=10, max_size=100))
def test_compiled_matches_reference(seq):
    replay(compiled.Layout(1, [(1, 0, 3), (1, 0, 2)], 0, 0, [], max_sessions=85), seq, run, observe,
           same_bindings)


# ---------------------------------------------------------------- real processes
def _bind_all(seg, w, n, go_r, out_w):
    t = seg.sessions
    assert os.read(go_r, 1) == b"g"
    got = [t.bind(key(i), 0, (i + w) % 3, 60.0)[0] for i in range(n)]
    os.write(out_w, pickle.dumps(got))


def test_racing_processes_agree_on_every_sessions_replica():
    maker = SegmentMaker(compiled, "fi-sess-mp")
    go_r, go_w = os.pipe()
    outs = [os.pipe() for _ in range(4)]
    try:
        seg = maker(4, [(1, 0, 3)], 0, 0, [], max_sessions=4096)
        pids = [fork(_bind_all, seg, w, 300, go_r, outs[w][1]) for w in range(4)]
        os.write(go_w, b"g" * 4)
        assert wait_all(pids, 60) == [0] * 4
        answers = [pickle.loads(os.read(outs[w][0], 1 << 20)) for w in range(4)]
        assert answers[0] == answers[1] == answers[2] == answers[3]      # one winner per session
        assert answers[0] == [seg.sessions.touch(key(i)) for i in range(300)]
        assert seg.sessions.occupancy == 300 and seg.sessions._debug_check() == []
    finally:
        for fd in (go_r, go_w, *[fd for pair in outs for fd in pair]):
            os.close(fd)
        maker.cleanup()


def _die_mid_bind(seg, k):
    seg.sessions._debug_die_mid_bind(k, 0, 1)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_process_killed_mid_bind_leaves_nothing_inconsistent():
    maker = SegmentMaker(compiled, "fi-sess-mp")
    try:
        seg = maker(2, [(1, 0, 3)], 0, 0, [], max_sessions=40)         # one stripe: every key shares it
        t = seg.sessions
        for i in range(10):
            t.bind(key(i), 0, i % 3, 60.0)
        assert wait_all([fork(_die_mid_bind, seg, key(99))], 10) == [-signal.SIGKILL]
        assert t.touch(key(3)) == 0                     # the next locker repairs (EOWNERDEAD) ...
        assert t.touch(key(99)) == -1                   # ... the half-written binding is gone
        assert t.occupancy == 10 and t._debug_check() == []
        assert t.bind(key(99), 0, 2, 60.0) == (2, None) and t.occupancy == 11
    finally:
        maker.cleanup()


def _churn(seg, seed):
    t, rng = seg.sessions, random.Random(seed)
    while True:
        k = key(rng.randrange(300))
        op = rng.randrange(6)
        if op == 0:
            t.remove(k)
        elif op == 1:
            t.rebind(k, rng.randrange(3), rng.randrange(3))
        elif op == 2:
            t.backend_transition(k, rng.randrange(4), rng.randrange(4), rng.randrange(3))
        elif op == 3:
            t.expire(5)
        else:
            t.bind(k, 0, rng.randrange(3), rng.choice([0.001, 60.0]))


def test_processes_killed_at_random_moments_leave_the_table_consistent():
    """Workers churning a small table (evictions, expiry, tombstones) are SIGKILLed at random
    moments, most of them inside a stripe's critical section; the table stays consistent."""
    maker = SegmentMaker(compiled, "fi-sess-mp")
    rng = random.Random(7)
    try:
        seg = maker(2, [(1, 0, 3)], 0, 0, [], max_sessions=85)          # two stripes
        survivor = fork(_churn, seg, 1)
        for round_ in range(20):
            pid = fork(_churn, seg, 100 + round_)
            time.sleep(rng.uniform(0.001, 0.02))
            os.kill(pid, signal.SIGKILL)
            assert wait_all([pid], 10) == [-signal.SIGKILL]
        os.kill(survivor, signal.SIGKILL)
        assert wait_all([survivor], 10) == [-signal.SIGKILL]
        t = seg.sessions
        assert t._debug_check() == []
        assert t.occupancy == len(t.entries()) <= t.capacity == 128
        for i in range(300):                            # and it still works for everyone
            t.remove(key(i))
        assert t.occupancy == 0 and t._debug_check() == []
    finally:
        maker.cleanup()


def test_a_table_holding_max_sessions_bindings_rarely_evicts():
    """The contract's table "holds server.max_sessions bindings": with 1.5 slots per binding,
    filling it to max_sessions evicts (almost) nothing, despite LRU being per stripe."""
    import hashlib
    maker = SegmentMaker(compiled, "fi-sess-fill")
    try:
        seg = maker(1, [(1, 0, 4)], 0, 0, [], max_sessions=65536)
        t = seg.sessions
        for i in range(65536):
            t.bind(hashlib.blake2b(b"%d" % i, digest_size=16).digest(), 0, i % 4, 3600.0)
        assert t.evictions <= 65 and t.occupancy == 65536 - t.evictions
        print(f"evictions filling 65,536 bindings: {t.evictions}")
    finally:
        maker.cleanup()
