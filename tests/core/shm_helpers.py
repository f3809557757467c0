"""Helpers shared by the shared-memory core tests, for the compiled module and
the pure-Python reference alike."""
from __future__ import annotations

import os
import signal
import time
import traceback
import uuid

import pytest


def segment_name(prefix: str) -> str:
    """A segment name no other test, worker or concurrent run uses."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


class SegmentMaker:
    """Creates segments of one implementation (``shm`` or ``ref.shm``) under fresh
    names; ``cleanup()`` unlinks and closes every one it made. Fixtures bind their
    own default sizes with ``functools.partial``."""

    def __init__(self, impl, prefix: str):
        self.impl = impl
        self.prefix = prefix
        self.made = []

    def __call__(self, n_workers, deployments, n_counters, n_histograms, bounds, **layout):
        seg = self.impl.Segment.create(
            segment_name(self.prefix),
            self.impl.Layout(n_workers, list(deployments), n_counters, n_histograms, list(bounds), **layout))
        self.made.append(seg)
        return seg

    def cleanup(self) -> None:
        for seg in self.made:
            seg.unlink()
            seg.close()


def fork(fn, *args):
    """Run fn(*args) in a child process; exit status 0 on success, 1 on exception."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_all(pids, timeout=60.0):
    """Exit codes of pids (negative: killed by that signal); kills (and reports
    "timeout" for) stragglers, so a bug fails a test instead of hanging it."""
    deadline = time.monotonic() + timeout
    codes = {}
    while len(codes) < len(pids):
        for pid in pids:
            if pid in codes:
                continue
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                codes[pid] = os.waitstatus_to_exitcode(status)
        if len(codes) < len(pids):
            if time.monotonic() > deadline:
                for pid in pids:
                    if pid not in codes:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        codes[pid] = "timeout"
                break
            time.sleep(0.005)
    return [codes[p] for p in pids]


def gave_back(reclaimed: dict, **expected) -> bool:
    """``reclaim_worker``'s answer holds ``expected`` and zero for every other kind of holding."""
    assert set(expected) <= set(reclaimed), set(expected) - set(reclaimed)
    return reclaimed == {kind: expected.get(kind, 0) for kind in reclaimed}


T0 = 10**15     # where the tests' clocks start (ns): far from 0, which means "the real clock"


def replay(layout, seq, run, observe=None, at_end=None):
    """Drive a compiled segment and a reference one, both made from ``layout`` and on the same
    test clock, with the operations ``seq``: ``run(segment, op)`` must answer the same on both
    (an exception counts as its type's name), and so must ``observe(segment)`` after each.
    ``("tick", ms)`` advances both clocks. ``at_end(compiled, reference)`` checks the end."""
    from fastinfer._core import shm as compiled
    from fastinfer._core.ref import shm as reference
    segs = [impl.Segment.create(segment_name("fi-replay"), layout) for impl in (compiled, reference)]
    now = T0
    try:
        for seg in segs:
            seg.set_test_clock(now)
        for i, op in enumerate(seq):
            if op[0] == "tick":
                now += op[1] * 1_000_000
                for seg in segs:
                    seg.set_test_clock(now)
                continue
            c, r = (_answer(run, seg, op) for seg in segs)
            assert c == r, f"step {i} {op}: compiled {c!r}, reference {r!r}"
            if observe is not None:
                c, r = (observe(seg) for seg in segs)
                assert c == r, f"step {i} {op}: compiled {c!r}, reference {r!r}"
        if at_end is not None:
            at_end(*segs)
    finally:
        for seg in segs:
            seg.unlink()
            seg.close()


def _answer(run, seg, op):
    try:
        return run(seg, op)
    except Exception as e:        # same error type on both sides
        return type(e).__name__


# ---------------------------------------------------------------- fixtures
# (import them into a test module -- ``from shm_helpers import impl, segments`` -- rather than
# from a tests/core/conftest.py, which would shadow tests/conftest.py for ``from conftest import``)
@pytest.fixture(params=["compiled", "ref"])
def impl(request):
    """The compiled core, then its pure-Python reference: a test that uses it runs on both."""
    from fastinfer._core import shm as compiled
    from fastinfer._core.ref import shm as reference
    return compiled if request.param == "compiled" else reference


@pytest.fixture
def segments(impl):
    """Makes segments of ``impl`` (``segments(n_workers, deployments, ..., **layout)``) and
    removes every one of them after the test."""
    maker = SegmentMaker(impl, "fi-core")
    yield maker
    maker.cleanup()
