"""The compiled process calls (``fastinfer._core.proc``) against their ``ctypes`` reference, each
in a fresh process: a parent-death signal is the process's own, and so is its heap."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fastinfer._core import proc as compiled
from fastinfer._core.ref import proc as reference

IMPLS = {"compiled": "fastinfer._core.proc", "reference": "fastinfer._core.ref.proc"}


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("setter,reader", [("compiled", "reference"), ("reference", "compiled")])
def test_the_parent_death_signal_set_by_one_is_read_by_the_other(setter, reader):
    out = run_python(f"""
import signal, {IMPLS[setter]} as setter, {IMPLS[reader]} as reader
before = reader.parent_death_signal()
ok = setter.die_with_parent(signal.SIGTERM)
during = reader.parent_death_signal()
setter.die_with_parent(0)
print(before, ok, during, reader.parent_death_signal())
""")
    assert out == "0 True 15 0"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_that_asked_dies_when_its_parent_does():
    """A parent starts a child that asks for SIGKILL at the parent's death, then exits: the child,
    which would otherwise sleep a minute, is gone."""
    out = run_python("""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time, fastinfer._core.proc as p; p.die_with_parent(signal.SIGKILL); print('armed', flush=True); time.sleep(60)"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid)
""")
    # the child's parent was this script's process, which has exited: the child got SIGKILL
    pid = int(out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the child outlived its parent")


@pytest.mark.parametrize("impl", IMPLS)
def test_free_pages_inside_the_heap_go_back_to_the_kernel(impl):
    """40,000 malloc'ed kilobytes freed below one that stays: glibc keeps them resident (it trims
    only the heap's top) until ``release_free_memory``."""
    out = run_python(f"""
import {IMPLS[impl]} as proc
def anon_kib():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssAnon'))
blocks = [bytes(1024) * 1 + bytes([i % 256]) for i in range(40_000)]
pin = bytes(2048)
del blocks
before = anon_kib()
released = proc.release_free_memory()
print(released, before - anon_kib())
""")
    released, dropped_kib = out.split()
    if released == "None":
        pytest.skip("not glibc: nothing to release with")
    assert released == "True" and int(dropped_kib) >= 16 * 1024


def test_a_signal_number_out_of_range_is_refused():
    for impl in (compiled, reference):
        with pytest.raises(ValueError):
            impl.die_with_parent(-1)
        with pytest.raises(ValueError):
            impl.die_with_parent(65)
