"""The prefix index in the shared segment (issue 9, prefix routing): block-chain hash ->
replicas that recently served it, per deployment, bounded, advisory ("rare lost updates
are fine, wrong answers on reads are not"); compiled against reference, and real processes
racing writers against a reader that checks every answer."""
import array
import functools
import os
import signal

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastinfer._core import shm as compiled
from fastinfer._core.ref._arith import mix64
import shm_helpers
from shm_helpers import T0, SegmentMaker, fork, gave_back, replay, wait_all

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations


def u64(*hashes):
    return numpy.array(hashes, dtype=numpy.uint64)


@pytest.fixture
def make(segments):
    return functools.partial(segments, n_workers=2, deployments=[(1, 0, 3), (1, 0, 2), (1, 0, 1)],
                             n_counters=0, n_histograms=0, bounds=())


def index(make, capacity=1000):
    seg = make(prefix_capacity=[capacity, 100, 0])
    seg.set_test_clock(T0)
    return seg, seg.prefix(0)


def test_match_counts_each_replicas_leading_blocks(make):
    seg, p = index(make)
    conversation = u64(101, 102, 103, 104, 105)
    assert p.match(conversation) == [0, 0, 0]
    p.insert(0, conversation[:4], 1)                  # replica 1 served the first 4 blocks
    p.insert(1, conversation[:2], 2)                  # replica 2 the first 2
    p.insert(1, u64(102, 103), 0)                     # replica 0 holds blocks, but not block 0
    assert p.match(conversation) == [0, 4, 2]
    assert p.match(u64(101, 999, 103)) == [0, 1, 1]   # the chain breaks at a block nobody holds
    assert p.match(u64()) == [0, 0, 0]
    assert p.occupancy == 4 and p.n_replicas == 3


def test_hashes_from_numpy_bytes_or_arrays(make):
    seg, p = index(make)
    p.insert(0, array.array("Q", [7, 8, 2**64 - 1]), 0)
    for form in (u64(7, 8, 2**64 - 1), u64(7, 8, 2**64 - 1).tobytes(), array.array("Q", [7, 8, 2**64 - 1]),
                 bytearray(u64(7, 8, 2**64 - 1).tobytes())):
        assert p.match(form) == [3, 0, 0]
    assert p.match(u64(7, 0, 8, 0, 2**64 - 1)[::2]) == [3, 0, 0]    # strided views too
    with pytest.raises(ValueError):
        p.match(b"123")                               # not whole uint64s
    with pytest.raises(ValueError):
        p.match(numpy.array([7, 8], dtype=numpy.int32))
    with pytest.raises(IndexError):
        p.insert(0, u64(1), 3)
    with pytest.raises(IndexError):
        p.insert(2, u64(1), 0)


def test_bounded_and_per_deployment(make):
    seg, p = index(make, capacity=20)
    assert p.capacity == 24 and p.nbytes == 24 * 32
    p.insert(0, u64(*range(1000)), 0)
    assert p.occupancy == 24                          # never more than its capacity
    other, none = seg.prefix(1), seg.prefix(2)
    assert other.match(u64(*range(10))) == [0, 0]     # deployments do not share entries
    other.insert(0, u64(5), 1)
    assert other.match(u64(5)) == [0, 1]
    assert none.capacity == 0 and none.nbytes == 0
    none.insert(0, u64(5), 0)                         # no index: nothing kept, nothing found
    assert none.match(u64(5)) == [0] and none.occupancy == 0


def test_a_full_set_evicts_its_least_recently_used(make):
    seg, p = index(make, capacity=16)                 # 2 sets of 8
    same_set = [h for h in range(10_000) if mix64(h) % 2 == 0][:9]
    for i, h in enumerate(same_set[:8]):
        seg.set_test_clock(T0 + i)
        p.insert(0, u64(h), 0)
    seg.set_test_clock(T0 + 100)
    p.insert(1, u64(same_set[0]), 1)                  # used again: the oldest is now the second
    p.insert(0, u64(same_set[8]), 2)
    assert p.match(u64(same_set[1])) == [0, 0, 0]
    assert p.match(u64(same_set[0])) == [1, 1, 0] and p.match(u64(same_set[8])) == [0, 0, 1]
    assert p.occupancy == 8


def test_forget_a_replica(make):
    seg, p = index(make)
    p.insert(0, u64(1, 2, 3), 1)
    p.insert(0, u64(1, 2), 2)
    assert p.forget_replica(0, 1) == 3
    assert p.match(u64(1, 2, 3)) == [0, 0, 2] and p.occupancy == 2
    assert p.forget_replica(1, 2) == 2 and p.occupancy == 0


def test_entries_and_restore(make):
    seg, p = index(make)
    p.insert(0, u64(10, 20), 1)
    p.insert(0, u64(10), 0)
    seg.set_test_clock(T0 + 5 * 10**9)
    got = sorted(p.entries())
    assert got == [(10, 0b011, 5.0), (20, 0b010, 5.0)]
    other = seg.prefix(1)                             # 2 replicas: bits are the caller's to map
    for h, mask, idle in got:
        other.restore(0, h, mask & 0b11, idle)
    assert other.match(u64(10, 20)) == [1, 2]
    assert sorted(other.entries()) == got


# ---------------------------------------------------------------- compiled == reference
h_ = st.integers(0, 40)
ops = st.one_of(
    st.tuples(st.just("insert"), st.lists(h_, max_size=12), st.integers(0, 2)),
    st.tuples(st.just("match"), st.lists(h_, max_size=12)),
    st.tuples(st.just("forget"), st.integers(0, 2)),
    st.tuples(st.just("tick"), st.integers(1, 5)),
)


def run(seg, op):
    kind, *a = op
    p = seg.prefix(0)
    if kind == "insert":
        return p.insert(0, u64(*a[0]), a[1])
    if kind == "match":
        return p.match(u64(*a[0]))
    return p.forget_replica(1, a[0])


def same_entries(c, r):
    assert sorted(c.prefix(0).entries()) == sorted(r.prefix(0).entries())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=60))
def test_compiled_matches_reference(seq):
    replay(compiled.Layout(2, [(1, 0, 3)], 0, 0, [], prefix_capacity=[16]), seq, run,
           lambda seg: seg.prefix(0).occupancy, same_entries)


# ---------------------------------------------------------------- real processes
FAMILY = 1_000_003                                    # replica r inserts only hashes r*FAMILY + i
WRONG, CHECKED = 0, 1


def _writer(seg, w, replica, rounds):
    p = seg.prefix(0)
    for k in range(rounds):
        p.insert(w, u64(*(replica * FAMILY + (k * 7 + j) % 500 for j in range(8))), replica)


def _reader(seg, w, rounds):
    p, c = seg.prefix(0), seg.counters
    for k in range(rounds):
        for replica in range(3):
            depth = p.match(u64(replica * FAMILY + k % 500))
            if any(d and r != replica for r, d in enumerate(depth)):
                c.add(WRONG)                          # a replica that was never inserted for it
            c.add(CHECKED)


def test_racing_writers_never_make_a_reader_see_a_wrong_replica():
    """Three writers churn a tiny index (constant eviction, entries reused for other hashes)
    while a reader checks every answer: replica r is only ever inserted for its own hashes."""
    maker = SegmentMaker(compiled, "fi-prefix-mp")
    try:
        seg = maker(4, [(1, 0, 3)], 2, 0, [], prefix_capacity=[64])
        pids = [fork(_writer, seg, r, r, 6000) for r in range(3)] + [fork(_reader, seg, 3, 20_000)]
        assert wait_all(pids, 120) == [0] * 4
        assert seg.counters.get(WRONG) == 0 and seg.counters.get(CHECKED) == 60_000
        assert gave_back(seg.reclaim_worker(0))        # every writer unlocked what it locked
    finally:
        maker.cleanup()


def _die_holding_an_entry(seg):
    p = seg.prefix(0)
    p.insert(1, u64(42), 2)
    assert p._debug_lock_entry(1, 42)
    os.kill(os.getpid(), signal.SIGKILL)


def test_an_entry_a_killed_writer_held_is_given_back():
    maker = SegmentMaker(compiled, "fi-prefix-mp")
    try:
        seg = maker(2, [(1, 0, 3)], 0, 0, [], prefix_capacity=[64])
        p = seg.prefix(0)
        assert wait_all([fork(_die_holding_an_entry, seg)], 10) == [-signal.SIGKILL]
        assert p.match(u64(42)) == [0, 0, 0]           # locked: read as a miss, never half-read
        p.insert(0, u64(42), 0)                        # (a lost update, or a duplicate entry)
        assert gave_back(seg.reclaim_worker(1), prefix_entries=1)
        p.insert(0, u64(42), 1)
        assert p.match(u64(42))[1] == 1 and p.match(u64(42))[2] == 0
        assert gave_back(seg.reclaim_worker(1))
    finally:
        maker.cleanup()
