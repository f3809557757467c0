"""Lifecycle of the compiled segment: /dev/shm entry, attach validation,
double create, close/unlink idempotence, layout round trip."""
import os
import pickle
import struct

import pytest

from fastinfer._core import shm
from shm_helpers import segment_name

LAYOUT = shm.Layout(3, [(4, 16, 2), (1, 0, 1)], 5, 2, [0.01, 0.1, 1.0])
FULL = shm.Layout(3, [(4, 16, 2), (1, 0, 1)], 5, 2, [0.01, 0.1, 1.0],
                  breakers=[(3, 1.5, 20.0, 2), (1, 0.5, 0.5, 1)], replica_weights=[[2, 5], [1]],
                  prefix_capacity=[100, 0], token_buckets=[(500.0, 50), (250_000.0, 300_000)],
                  key_max_concurrency=[16, 0, 3], max_sessions=1000)


@pytest.fixture
def name():
    n = segment_name("fi-seg")
    yield n
    try:
        os.unlink(f"/dev/shm/{n}")
    except FileNotFoundError:
        pass


def test_create_attach_unlink(name):
    seg = shm.Segment.create(name, LAYOUT)
    path = f"/dev/shm/{name}"
    assert os.path.exists(path) and seg.path == path
    assert os.stat(path).st_size == seg.nbytes
    assert os.stat(path).st_mode & 0o777 == 0o600
    other = shm.Segment.attach("/" + name)                 # "/name" spelling accepted too
    assert other.layout == LAYOUT and other.nbytes == seg.nbytes
    other.breaker(1, 0).force_open(5.0)
    assert seg.breaker(1, 0).state == shm.OPEN
    seg.unlink()
    assert not os.path.exists(path)
    seg.unlink()                                           # idempotent
    other.unlink()
    assert seg.breaker(1, 0).state == shm.OPEN             # mappings outlive the name
    seg.close()
    seg.close()                                            # idempotent
    assert seg.closed and not other.closed
    other.close()
    with pytest.raises(FileNotFoundError):
        shm.Segment.attach(name)


def test_closed_segment_objects_raise(name):
    seg = shm.Segment.create(name, FULL)
    a, b, c, h = seg.admission(0), seg.breaker(0, 1), seg.counters, seg.histograms
    tb, kc, ks, lease = seg.bucket(1), seg.key_concurrency(0), seg.key_spend(0), seg.lease(0)
    rl, t, p = seg.replicas(0), seg.sessions, seg.prefix(0)
    seg.unlink()
    seg.close()
    for call in (lambda: a.try_acquire(0), lambda: a.release(0), lambda: a.in_flight,
                 lambda: b.check(0), lambda: b.state, lambda: b.export(), lambda: c.add(0),
                 lambda: c.snapshot(), lambda: h.observe(0, 1.0), lambda: h.raw(0),
                 lambda: seg.admission(0), lambda: seg.reclaim_worker(0),
                 lambda: tb.take(1), lambda: tb.available(), lambda: seg.take_all([0], [1]),
                 lambda: kc.try_acquire(0), lambda: kc.in_flight, lambda: ks.add(1, 1),
                 lambda: lease.try_hold(0, 1.0), lambda: lease.holder,
                 lambda: rl.pick_and_start(0, 1), lambda: rl.finish(0, 0), lambda: rl.healthy_mask,
                 lambda: t.touch(b"k" * 16), lambda: t.expire(), lambda: t.occupancy,
                 lambda: p.match(b""), lambda: p.insert(0, b"", 0), lambda: p.occupancy,
                 lambda: seg.set_test_clock(1)):
        with pytest.raises(shm.SegmentError, match="closed"):
            call()
    # configuration stays readable: it was copied when the objects were made
    assert (tb.capacity, tb.per_minute, kc.limit, t.max_sessions, p.capacity) == (300_000, 250_000.0, 16, 1000, 104)


def test_double_create_fails_cleanly(name):
    seg = shm.Segment.create(name, LAYOUT)
    try:
        seg.counters.set(0, 99)
        with pytest.raises(FileExistsError, match="already exists"):
            shm.Segment.create(name, shm.Layout(1, [], 1, 0, []))
        assert seg.counters.get(0) == 99
        assert shm.Segment.attach(name).layout == LAYOUT
    finally:
        seg.unlink()
        seg.close()


def test_attach_garbage_raises_clear_error(name):
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(os.urandom(4096))
    with pytest.raises(shm.SegmentError, match="not a fastinfer shared-memory segment"):
        shm.Segment.attach(name)


def test_attach_too_small_raises(name):
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(b"x" * 10)
    with pytest.raises(shm.SegmentError, match="too small"):
        shm.Segment.attach(name)


def test_attach_wrong_version_raises(name):
    seg = shm.Segment.create(name, LAYOUT)
    seg.close()
    with open(f"/dev/shm/{name}", "r+b") as f:        # header: u64 magic, i64 version, ...
        f.seek(8)
        f.write(struct.pack("<q", shm.LAYOUT_VERSION + 1))
    with pytest.raises(shm.SegmentError, match=f"version {shm.LAYOUT_VERSION + 1}.*expects {shm.LAYOUT_VERSION}"):
        shm.Segment.attach(name)


def test_attach_truncated_segment_raises(name):
    seg = shm.Segment.create(name, LAYOUT)
    size = seg.nbytes
    seg.close()
    os.truncate(f"/dev/shm/{name}", size - 64)
    with pytest.raises(shm.SegmentError, match="header says"):
        shm.Segment.attach(name)


def test_bad_names_and_layouts():
    with pytest.raises(ValueError):
        shm.Segment.create("a/b", LAYOUT)
    with pytest.raises(ValueError):
        shm.Segment.create("", LAYOUT)
    with pytest.raises(TypeError):
        shm.Segment.create("x", object())


def test_out_of_range_indices(name):
    seg = shm.Segment.create(name, LAYOUT)
    try:
        with pytest.raises(IndexError):
            seg.admission(2)
        with pytest.raises(IndexError):
            seg.breaker(1, 1)
        with pytest.raises(IndexError):
            seg.breaker(0, -1)
        with pytest.raises(IndexError):
            seg.register_worker(3, 1, -1)
        with pytest.raises(IndexError):
            seg.breaker(0, 0).check(-1)
        with pytest.raises(ValueError):
            seg.admission(1).cancel(-5)
    finally:
        seg.unlink()
        seg.close()


@pytest.fixture
def full(name):
    seg = shm.Segment.create(name, FULL)
    yield seg
    seg.unlink()
    seg.close()


def test_every_region_round_trips_through_attach(full):
    seg = full
    other = shm.Segment.attach(seg.name)
    assert other.layout == FULL and other.nbytes == seg.nbytes
    assert pickle.loads(pickle.dumps(FULL)) == FULL and hash(other.layout) == hash(FULL)
    assert other.breaker(0, 1).config == (3, 1.5, 20.0, 2) and other.replicas(0).weight(1) == 5
    seg.bucket(0).take(7)
    seg.key_concurrency(2).try_acquire(1)
    seg.sessions.bind(b"k" * 16, 1, 0, 60.0)
    seg.prefix(0).insert(0, b"\x01" * 8, 1)
    seg.lease(2).try_hold(1, 60.0)
    assert other.bucket(0).available() < 44 and other.key_concurrency(2).in_flight == 1
    assert other.sessions.touch(b"k" * 16) == 0 and other.prefix(0).match(b"\x01" * 8) == [0, 1]
    assert other.lease(2).holder == 1
    other.close()


def test_regions_do_not_overlap(full):
    """Filling every region to the brim leaves every other one as it was."""
    seg = full
    seg.set_test_clock(10**15)
    for i in range(5):
        seg.counters.set(i, -1)
    for k in range(3):
        seg.key_spend(k).restore(65535, 2**48 - 1)
    for i in range(2):
        seg.bucket(i).charge(10**9)
    for j in range(2000):
        seg.sessions.bind(j.to_bytes(16, "little"), j % 2, 0, 1e9)
    seg.prefix(0).insert(0, b"".join(j.to_bytes(8, "little") for j in range(500)), 1)
    for lease in range(8):
        assert seg.lease(lease).try_hold(2, 1e9)
    assert seg.counters.snapshot().tolist() == [-1] * 5
    assert [seg.key_spend(k).export() for k in range(3)] == [(65535, 2**48 - 1)] * 3
    assert seg.breaker(0, 0).state == shm.CLOSED and seg.breaker(1, 0).config == (1, 0.5, 0.5, 1)
    assert seg.admission(0).counts() == (0, 0) and seg.admission(1).max_concurrency == 1
    assert seg.replicas(0).healthy_mask == 0b11 and seg.replicas(0).in_flight(1) == 0
    assert seg.sessions._debug_check() == [] and seg.prefix(0).occupancy == 104
    assert seg.prefix(1).capacity == 0 and seg.layout == FULL
    assert shm.Segment.attach(seg.name).layout == FULL


def test_large_layout(name):
    # (cache-line placement of the hot words is checked at compile time: atomics.h _Static_assert)
    lay = shm.Layout(64, [(64, 1024, 4)] * 50, 4096, 300, [0.005 * 2 ** i for i in range(16)])
    seg = shm.Segment.create(name, lay)
    try:
        assert seg.nbytes % 64 == 0 and seg.nbytes < 64 * 1024 * 1024
        a = seg.admission(49)
        assert all(a.try_acquire(w) for w in range(64))
        assert a.enqueue(5, 1) >= 0 and a.queue_depth == 1
        seg.counters.add(4095, 3)
        seg.histograms.observe(299, 100.0)
        assert seg.histograms.snapshot(299)[0][-1] == 1 and seg.counters.get(4095) == 3
    finally:
        seg.unlink()
        seg.close()


def _mapping_rss_kb(path: str) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    rss, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:       # a mapping's header line
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1])
    return rss


def test_creating_a_segment_leaves_the_admission_pool_untouched(name):
    # 64 bytes an entry, one per max_concurrency + queue slot: 25.6 MB of pool for these two
    layout = shm.Layout(2, [(200_000, 200_000, 1)], 1, 1, [1.0])
    seg = shm.Segment.create(name, layout)
    try:
        assert seg.nbytes > 25_000_000
        assert _mapping_rss_kb(seg.path) < 1024            # the pool's pages stay zero-filled and unmapped
        adm = seg.admission(0)
        assert adm.enqueue(0, 1) == shm.GRANTED_NOW       # the pool is still usable: a burst reaches it
        assert _mapping_rss_kb(seg.path) < 1024
    finally:
        seg.unlink()
        seg.close()


def test_the_pool_hands_out_every_entry_once_and_reuses_freed_ones(name):
    seg = shm.Segment.create(name, shm.Layout(1, [(1, 3, 0)], 1, 1, [1.0]))
    try:
        adm = seg.admission(0)
        assert adm.try_acquire(0)
        tickets = [adm.enqueue(0, 2) for _ in range(3)]
        assert len({t & 0xFFFFFF for t in tickets}) == 3 and min(tickets) >= 0
        assert adm.enqueue(0, 2) == shm.QUEUE_FULL
        assert adm.cancel(tickets[1]) is True
        again = adm.enqueue(0, 0)                         # the freed entry, under a new generation
        assert again >= 0 and again != tickets[1]
        granted = []
        for _ in range(3):          # each release hands the slot to the best waiter, whose slot it then is
            adm.release(0)
            granted += adm.take_granted(0)
        assert granted == [again, tickets[0], tickets[2]]  # priority, then arrival
    finally:
        seg.unlink()
        seg.close()
