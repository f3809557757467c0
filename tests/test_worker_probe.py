"""The worker's probe: what it publishes each second, and the heap's free pages handed back first."""
from __future__ import annotations

import asyncio

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
