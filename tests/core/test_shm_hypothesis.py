"""Random operation sequences: the compiled shared-memory core and the
pure-Python reference must give the same observable results (single process)."""
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastinfer._core import shm as compiled
from fastinfer._core.ref import shm as reference
from shm_helpers import segment_name

N_WORKERS = 3
DEPLOYMENTS = [(2, 3, 2), (1, 2, 1)]      # (max_concurrency, queue_capacity, n_replicas)
BREAKERS = [(0, 0), (0, 1), (1, 0)]
BOUNDS = [0.1, 0.5, 1.0]
BREAKER_CONFIG = [(2, 0.5, 2.0, 1), (1, 0.25, 1.0, 2)]     # per deployment, from the Layout
T0 = 10**15                               # both segments run on the same test clock

w_ = st.sampled_from([0, 0, 1, 1, 2, 2, N_WORKERS])   # N_WORKERS is out of range on purpose
d_ = st.integers(0, len(DEPLOYMENTS) - 1)
b_ = st.integers(0, len(BREAKERS) - 1)
admission_ops = [
    st.tuples(st.just("try_acquire"), d_, w_),
    st.tuples(st.just("enqueue"), d_, w_, st.sampled_from([0, 1, 2, 3, 0, 1, 2, 3, 4])),
    st.tuples(st.just("take"), d_, w_),
    st.tuples(st.just("cancel"), d_, st.integers(0, 30)),
    st.tuples(st.just("release"), d_, w_),
    st.tuples(st.just("release_held"), d_, st.integers(0, 5)),   # a worker that holds a slot
    st.tuples(st.just("take_any"), d_, st.integers(0, 5)),       # a worker with pending grants
]
ops = st.one_of(
    *admission_ops, *admission_ops, *admission_ops,      # weight the queue up
    st.tuples(st.just("reclaim"), w_),
    st.tuples(st.just("b_check"), b_, w_),
    st.tuples(st.just("b_success"), b_, w_, st.booleans()),
    st.tuples(st.just("b_failure"), b_, w_, st.booleans()),
    st.tuples(st.just("b_release_probe"), b_, w_),
    st.tuples(st.just("b_force"), b_, st.sampled_from([0.0, 0.3, 1000.0, 1e300, float("inf"), -1.0])),
    st.tuples(st.just("tick"), st.sampled_from([1, 100, 250, 600, 2500])),   # ms
    st.tuples(st.just("b_reset"), b_),
    st.tuples(st.just("b_configure"), b_, st.integers(1, 3), st.sampled_from([0.0, 1000.0]),
              st.sampled_from([1000.0, 3000.0]), st.integers(1, 2)),
    st.tuples(st.just("c_add"), st.integers(0, 3), st.integers(-5, 5)),
    st.tuples(st.just("c_set"), st.integers(0, 2), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("h_observe"), st.integers(0, 2),
              st.sampled_from([0.0, 0.1, 0.10000001, 0.5, 0.49, 1.0, 3.0, -1.5, 1e-9, 12.345])),
)


class Harness:
    def __init__(self, impl):
        self.impl = impl
        self.seg = impl.Segment.create(segment_name("fi-hyp"),
                                       impl.Layout(N_WORKERS, DEPLOYMENTS, 3, 2, BOUNDS,
                                                   breakers=BREAKER_CONFIG))
        self.now = T0
        self.seg.set_test_clock(self.now)
        self.pipes = []
        for w in range(N_WORKERS):
            r, wr = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(wr, False)
            self.pipes.append((r, wr))
            self.seg.register_worker(w, os.getpid(), wr)
        self.tickets = {d: [] for d in range(len(DEPLOYMENTS))}   # op order -> ticket id

    def close(self):
        for r, w in self.pipes:
            os.close(r)
            os.close(w)
        self.seg.unlink()
        self.seg.close()

    def wakes(self):
        out = []
        for r, _ in self.pipes:
            try:
                out.append(len(os.read(r, 4096)))
            except BlockingIOError:
                out.append(0)
        return out

    def run(self, op):
        kind, *args = op
        seg = self.seg
        if kind == "try_acquire":
            return seg.admission(args[0]).try_acquire(args[1])
        if kind == "enqueue":
            d, w, p = args
            t = seg.admission(d).enqueue(w, p)
            if t >= 0:
                self.tickets[d].append(t)
                return ("ticket", len(self.tickets[d]) - 1)
            return t
        if kind == "take":
            d, w = args
            return [self.tickets[d].index(t) for t in seg.admission(d).take_granted(w)]
        if kind == "cancel":
            d, k = args
            if not self.tickets[d]:
                return None
            return seg.admission(d).cancel(self.tickets[d][k % len(self.tickets[d])])
        if kind == "release":
            return seg.admission(args[0]).release(args[1])
        if kind == "reclaim":
            return seg.reclaim_worker(args[0])
        if kind == "tick":
            self.now += args[0] * 1_000_000
            return seg.set_test_clock(self.now)
        if kind.startswith("b_"):
            b = seg.breaker(*BREAKERS[args[0]])
            rest = args[1:]
            return {"b_check": b.check, "b_success": b.record_success, "b_failure": b.record_failure,
                    "b_release_probe": b.release_probe, "b_force": b.force_open,
                    "b_reset": b.reset, "b_configure": b.configure}[kind](*rest)
        if kind == "c_add":
            return seg.counters.add(*args)
        if kind == "c_set":
            return seg.counters.set(*args)
        if kind == "h_observe":
            return seg.histograms.observe(*args)
        raise AssertionError(kind)

    def outcome(self, op):
        try:
            return ("ok", self.run(op))
        except Exception as e:   # same error type on both sides
            return ("error", type(e).__name__)

    def observe(self):
        seg = self.seg
        adm = []
        for d in range(len(DEPLOYMENTS)):
            a = seg.admission(d)
            assert a.counts() == (a.in_flight, a.queue_depth)
            adm.append((a.in_flight, a.queue_depth, a.queue_depth_by_priority(),
                        [a.held_by(w) for w in range(N_WORKERS)]))
        brk = []
        for d, r in BREAKERS:
            b = seg.breaker(d, r)
            brk.append((b.state, b.transitions, b.consecutive_failures, b.probes_in_flight,
                        b.retry_after_s, b.config))
        return {
            "admission": adm,
            "breakers": brk,
            "counters": seg.counters.snapshot().tolist(),
            "histograms": [seg.histograms.snapshot(i) for i in range(2)],
            "wakes": self.wakes(),
        }


def resolve(op, ref):
    """Turn the "pick a sensible worker" ops into concrete ones, choosing from
    the reference's state (both implementations then get the same arguments)."""
    kind = op[0]
    if kind in ("release_held", "take_any"):
        d, k = op[1], op[2]
        a = ref.seg.admission(d)
        if kind == "release_held":
            cands = [w for w in range(N_WORKERS) if a.held_by(w) > 0]
        else:
            cands = [w for w in range(N_WORKERS) if a._granted.get(w)]
        w = cands[k % len(cands)] if cands else k % N_WORKERS
        return ("release" if kind == "release_held" else "take", d, w)
    return op


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=20, max_size=100))
def test_compiled_matches_reference(seq):
    c, r = Harness(compiled), Harness(reference)
    try:
        for i, op in enumerate(seq):
            op = resolve(op, r)
            oc, orf = c.outcome(op), r.outcome(op)
            assert oc == orf, f"step {i} {op}: compiled {oc} != reference {orf}"
            sc, sr = c.observe(), r.observe()
            assert sc == sr, f"step {i} {op}: state differs\ncompiled  {sc}\nreference {sr}"
    finally:
        c.close()
        r.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=40))
def test_queue_drains_in_priority_then_fifo_order(enqueues):
    """Both implementations grant in (priority, arrival) order, whatever the mix of workers."""
    for impl in (compiled, reference):
        seg = impl.Segment.create(segment_name("fi-hyp"),
                                  impl.Layout(3, [(1, 64, 0)], 0, 0, []))
        try:
            a = seg.admission(0)
            assert a.try_acquire(0)
            tickets = [a.enqueue(w, p) for w, p in enqueues]
            expected = sorted(range(len(enqueues)), key=lambda i: (enqueues[i][1], i))
            holder, got = 0, []
            for _ in enqueues:
                woken = a.release(holder)
                assert woken == enqueues[expected[len(got)]][0]
                g = a.take_granted(woken)
                assert len(g) == 1
                got.append(tickets.index(g[0]))
                holder = woken
            assert got == expected
            a.release(holder)
            assert a.in_flight == 0 and a.queue_depth == 0
        finally:
            seg.unlink()
            seg.close()
