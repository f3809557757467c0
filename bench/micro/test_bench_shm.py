"""Micro-benchmarks of the shared-memory core (compiled vs the pure-Python reference).

Run:  python -m pytest bench/micro/test_bench_shm.py --benchmark-enable -p no:cacheprovider -s

Each test times one hot call (or pair of calls) of compiled and reference with an identical
timeit loop (the loop's own ~15 ns per iteration is included in both), prints both and their
ratio and stores them in ``benchmark.extra_info``; pytest-benchmark then times the compiled
call through a small generated function (so its figure includes one extra frame).
With ``--benchmark-disable`` (the default in pyproject) every test runs once, quickly.
"""
import hashlib
import os
import select
import statistics
import timeit
import uuid

import pytest

from fastinfer._core import shm as compiled
from fastinfer._core.ref import shm as reference

LAYOUT_ARGS = (2, [(4, 16, 1), (4, 16, 4)], 8, 2, [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
LAYOUT_KW = dict(token_buckets=[(600.0, 10**9), (200_000.0, 10**9)], key_max_concurrency=[16],
                 max_sessions=65536, prefix_capacity=[0, 65536])


@pytest.fixture
def segs():
    out = {}
    for impl in (compiled, reference):
        out[impl] = impl.Segment.create(f"fi-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                                        impl.Layout(*LAYOUT_ARGS, **LAYOUT_KW))
    yield out
    for s in out.values():
        s.unlink()
        s.close()


def per_call_ns(stmt, env, number):
    best = min(timeit.repeat(stmt, globals=env, number=number, repeat=5))
    return best / number * 1e9


def measure(benchmark, segs, name, stmt, names, target_ns=None):
    """Time ``stmt`` (statements separated by "; ") on the compiled segment and on the
    reference with the same timeit loop, report both and their ratio (printed, and in
    ``benchmark.extra_info``), then run it under pytest-benchmark (compiled) in fixed
    batches (its auto-calibration is coarse at ~30 ns). ``names(segment)`` gives the
    variables ``stmt`` uses. Returns the value of the last statement."""
    env_c, env_r = names(segs[compiled]), names(segs[reference])
    n = 2000 if benchmark.disabled else 200_000
    c_ns = per_call_ns(stmt, env_c, n)
    r_ns = per_call_ns(stmt, env_r, max(n // 10, 200))
    benchmark.extra_info.update({
        "compiled_ns": round(c_ns, 1), "reference_ns": round(r_ns, 1),
        "speedup_vs_reference": round(r_ns / c_ns, 1), "target_ns": target_ns,
    })
    print(f"\n{name:<30} compiled {c_ns:8.1f} ns   reference {r_ns:9.1f} ns   "
          f"ratio x{r_ns / c_ns:6.1f}   target <= {target_ns} ns")
    *body, last = stmt.split("; ")
    exec("def cycle():\n" + "".join(f"    {line}\n" for line in body) + f"    return {last}\n", env_c)
    return benchmark.pedantic(env_c["cycle"], iterations=20_000, rounds=30, warmup_rounds=1)


def test_bench_breaker_check_closed(benchmark, segs):
    assert measure(benchmark, segs, "breaker.check (closed)", "b.check(0)",
                   lambda s: {"b": s.breaker(0, 0)}, 100) == 0


def test_bench_try_acquire_release(benchmark, segs):
    measure(benchmark, segs, "try_acquire + release", "a.try_acquire(0); a.release(0)",
            lambda s: {"a": s.admission(0)}, 300)
    assert segs[compiled].admission(0).in_flight == 0


def test_bench_bucket_take_refund(benchmark, segs):
    """A request's RPM token taken and given back (the issue 8 bar: <= 200 ns)."""
    measure(benchmark, segs, "bucket take + refund", "b.take(1); b.refund(1)",
            lambda s: {"b": s.bucket(0)}, 200)
    assert segs[compiled].bucket(0).available() == segs[compiled].bucket(0).capacity


def test_bench_take_all(benchmark, segs):
    """A request under a key RPM and a key TPM limit: two buckets, all or none."""
    assert measure(benchmark, segs, "take_all (2 buckets)", "s.take_all((0, 1), (1, 70))",
                   lambda s: {"s": s}) == (True, 0.0)


def test_bench_key_concurrency(benchmark, segs):
    measure(benchmark, segs, "key try_acquire + release", "k.try_acquire(0); k.release(0)",
            lambda s: {"k": s.key_concurrency(0)})
    assert segs[compiled].key_concurrency(0).in_flight == 0


def test_bench_key_spend(benchmark, segs):
    measure(benchmark, segs, "key spend add", "s.add(20000, 1)", lambda s: {"s": s.key_spend(0)})


def test_bench_pick_and_finish(benchmark, segs):
    """least_loaded over 4 replicas, host-wide: pick (one CAS) and finish with a latency."""
    measure(benchmark, segs, "pick_and_start + finish", "r.finish(0, r.pick_and_start(0, 1), 0.05)",
            lambda s: {"r": s.replicas(1)})
    assert sum(segs[compiled].replicas(1).in_flight(i) for i in range(4)) == 0


def test_bench_session_touch(benchmark, segs):
    """A sticky request's lookup + touch in a table holding 50,000 bindings
    (issue 9 bar: <= 300 ns)."""
    keys = [hashlib.blake2b(b"tenant/dep/%d" % i, digest_size=16).digest() for i in range(50_000)]
    for s in segs.values():
        for i, k in enumerate(keys):
            s.sessions.bind(k, 1, i % 4, 3600.0)
    assert measure(benchmark, segs, "session touch (lookup+touch)", "t.touch(k)",
                   lambda s: {"t": s.sessions, "k": keys[12345]}, 300) == 12345 % 4
    assert segs[compiled].sessions.evictions == 0


def test_bench_prefix_match(benchmark, segs):
    """Prefix routing on an 8 KB prompt: 32 block hashes matched against 4 replicas, in an
    index holding 40,000 other blocks."""
    import numpy
    rng = numpy.random.default_rng(1)
    other = rng.integers(0, 2**63, 40_000, dtype=numpy.uint64)
    prompt = rng.integers(0, 2**63, 32, dtype=numpy.uint64)
    for s in segs.values():
        for r in range(4):
            s.prefix(1).insert(0, other[r::4], r)
        s.prefix(1).insert(0, prompt, 2)
        s.prefix(1).insert(0, prompt[:20], 1)
    assert measure(benchmark, segs, "prefix match (32 blocks)", "p.match(h)",
                   lambda s: {"p": s.prefix(1), "h": prompt}) == [0, 20, 32, 0]


def test_bench_prefix_insert(benchmark, segs):
    import numpy
    prompt = numpy.arange(1000, 1032, dtype=numpy.uint64)
    measure(benchmark, segs, "prefix insert (32 blocks)", "p.insert(0, h, 3)",
            lambda s: {"p": s.prefix(1), "h": prompt})
    assert segs[compiled].prefix(1).match(prompt) == [0, 0, 0, 32]


def test_bench_counter_add(benchmark, segs):
    measure(benchmark, segs, "counters.add", "c.add(3, 1)", lambda s: {"c": s.counters})


def test_bench_histogram_observe(benchmark, segs):
    measure(benchmark, segs, "histograms.observe", "h.observe(1, 0.0375)", lambda s: {"h": s.histograms})


# ---------------------------------------------------------------- cross-process handoff
def _handoff_child(seg, efd, cmd_r, res_w, rounds):
    """Worker 1: enqueue, tell A, wait on the eventfd (epoll), take the grant,
    report perf_counter_ns at wakeup, release."""
    import time
    a = seg.admission(0)
    ep = select.epoll()
    ep.register(efd, select.EPOLLIN)
    for _ in range(rounds):
        if os.read(cmd_r, 1) != b"e":
            break
        t = a.enqueue(1, 2)
        assert t >= 0
        os.write(res_w, b"q" + bytes(8))
        while True:
            if not ep.poll(5.0):
                raise TimeoutError("no wake")
            os.eventfd_read(efd)
            got = a.take_granted(1)
            if got:
                t1 = time.perf_counter_ns()
                break
        assert got == [t]
        a.release(1)
        os.write(res_w, b"w" + t1.to_bytes(8, "little"))


def test_bench_cross_process_handoff(benchmark):
    """A holds the only slot; B enqueued and sleeps in epoll on its eventfd;
    A releases; B's wakeup time minus A's release timestamp (CLOCK_MONOTONIC)."""
    import time
    rounds = 200 if benchmark.disabled else 2000
    seg = compiled.Segment.create(f"fi-bench-ho-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                                  compiled.Layout(2, [(1, 4, 0)], 0, 0, []))
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    cmd_r, cmd_w = os.pipe()
    res_r, res_w = os.pipe()
    seg.register_worker(1, 0, efd)
    a = seg.admission(0)
    lat = []
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _handoff_child(seg, efd, cmd_r, res_w, rounds)
            code = 0
        finally:
            os._exit(code)

    def read_msg():
        buf = b""
        while len(buf) < 9:
            if not select.select([res_r], [], [], 10)[0]:
                raise TimeoutError("child silent")
            buf += os.read(res_r, 9 - len(buf))
        return buf[:1], int.from_bytes(buf[1:], "little")

    def run():
        for _ in range(rounds):
            assert a.try_acquire(0)
            os.write(cmd_w, b"e")
            assert read_msg()[0] == b"q"
            time.sleep(0.0002)                # let B reach epoll_wait
            t0 = time.perf_counter_ns()
            assert a.release(0) == 1
            kind, t1 = read_msg()
            assert kind == b"w"
            lat.append((t1 - t0) / 1000)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        os.write(cmd_w, b"x")
        os.waitpid(pid, 0)
        for fd in (efd, cmd_r, cmd_w, res_r, res_w):
            os.close(fd)
        seg.unlink()
        seg.close()
    lat.sort()
    med = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    benchmark.extra_info.update({"handoff_median_us": round(med, 1), "handoff_p99_us": round(p99, 1),
                                 "rounds": rounds, "target_median_us": 50})
    print(f"\ncross-process handoff        median {med:6.1f} us   p99 {p99:7.1f} us   "
          f"({rounds} rounds, target median <= 50 us)")
    assert len(lat) == rounds
