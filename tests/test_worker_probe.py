"""The worker's probe: what it publishes each second, and the heap's free pages handed back first."""
from __future__ import annotations

import asyncio
import gc

from fastinfer.process import probe


class _Series:
    def __init__(self, calls):
        self.calls = calls
        self.values = {}

    def set(self, name, value):
        self.calls.append(name)
        self.values[name] = value

    def add_requests(self, n):
        self.calls.append("requests")

    def add_gc(self, collections, collected):
        self.values["gc"] = [a + b for a, b in zip(self.values.get("gc", (0, 0)), (collections, collected))]


def test_each_publish_hands_the_heaps_free_pages_back_before_it_reads_the_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(probe, "release_free_memory", lambda: calls.append("release"))
    series = _Series(calls)

    async def go():
        worker = probe.WorkerProbe(asyncio.get_running_loop(), series, [])
        worker.start()                  # publishes once at once
        worker.publish()
        worker.stop()                   # and once more
    asyncio.run(go())
    releases = [i for i, call in enumerate(calls) if call == "release"]
    reads = [i for i, call in enumerate(calls) if call == "worker_resident_memory_bytes"]
    assert len(releases) == len(reads) == 3
    assert all(release < read for release, read in zip(releases, reads))
    assert series.values["worker_resident_memory_bytes"] > 0


def test_each_publish_adds_the_collections_since_the_last_and_the_cycles_they_freed():
    """What the cyclic GC did between two publishes is added (never what it did before the probe
    started: start-up's collections are not the requests'), and every object a cycle held counts."""
    series = _Series([])

    class Node:
        pass

    async def go():
        gc.collect()                    # before the start: not counted
        worker = probe.WorkerProbe(asyncio.get_running_loop(), series, [])
        worker.start()
        counted_at_start = list(series.values["gc"])
        for _ in range(50):             # 50 cycles of two objects (and their __dict__s)
            a, b = Node(), Node()
            a.other, b.other = b, a
        del a, b
        gc.collect()
        worker.publish()
        after = list(series.values["gc"])
        worker.publish()                # nothing happened since: nothing added
        worker.stop()
        return counted_at_start, after, list(series.values["gc"])
    gc.disable()        # only the test's own collections: an automatic one between two reads would count too
    try:
        at_start, after, last = asyncio.run(go())
    finally:
        gc.enable()
    assert at_start == [0, 0]
    collections, collected = after
    assert collections >= 1 and collected >= 100
    assert last == after
