"""One worker's process metrics, published to the shared segment about once a second (its client
connections and requests ten times a second).

Owns: measuring this worker's resident memory, open file descriptors, event-loop lag, cyclic
garbage collections and open client connections (told to ``balance``, which lets a surplus go),
and counting the HTTP requests its servers received and the connections let go, into the worker's
own series (``metrics.WorkerSeries``), which every worker's ``/metrics`` shows; and, just before
the memory is read, handing the heap's free pages back to the kernel
(``release_free_memory``: glibc's ``malloc_trim``). Without it what a burst freed stays resident:
in the soak each slice of streams left a worker's RSS ~0.4 MiB higher for good, where trimmed it
comes back down within the second (``python -m fastinfer bench --soak``), at no CPU a request that
the soak's figure shows. A timer on the worker's loop does it all: nothing runs per request.
Must not touch: request handling.
"""
from __future__ import annotations

import asyncio
import gc
import os

from aiohttp import web

from .._core.proc import release_free_memory
from ..metrics import WorkerSeries
from .balance import ConnectionBalance

TICK_S = 0.1            # the loop's lag is sampled this often: a stall this long cannot hide between samples
TICKS_PER_PUBLISH = 10  # and published, with the rest, every TICK_S * TICKS_PER_PUBLISH
_PAGE = os.sysconf("SC_PAGE_SIZE")


class WorkerProbe:
    def __init__(self, loop: asyncio.AbstractEventLoop, series: WorkerSeries, servers: list[web.Server],
                 balance: ConnectionBalance | None = None):
        """``balance``: told this worker's open connections each time they are published."""
        self._loop = loop
        self._series = series
        self._servers = servers
        self._balance = balance
        self._statm = -1
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._ticks = 0
        self._max_lag = 0.0
        self._received = 0      # requests already added to the worker's counter
        self._gc_seen = (0, 0)  # the collector's runs and freed objects already added

    def start(self) -> None:
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        self._gc_seen = _gc_totals()      # start-up's collections are not the requests'
        self.publish()
        self._schedule()

    def stop(self) -> None:
        """Publish a last time (what the drain served is counted) and stop."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._statm >= 0:
            self.publish()
            os.close(self._statm)
            self._statm = -1

    def _schedule(self) -> None:
        self._due = self._loop.time() + TICK_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        # how late this timer ran is how long the loop was busy (or stopped) when it fell due
        self._max_lag = max(self._max_lag, self._loop.time() - self._due)
        self._ticks += 1
        if self._ticks >= TICKS_PER_PUBLISH:
            self.publish()
        else:
            self._count_clients()
        self._schedule()

    def publish(self) -> None:
        release_free_memory()       # then the memory published is what the worker holds
        series = self._series
        series.set("worker_event_loop_lag_seconds", self._max_lag)
        self._max_lag = 0.0
        self._ticks = 0
        series.set("worker_resident_memory_bytes", self._resident_bytes())
        series.set("worker_open_fds", len(os.listdir("/proc/self/fd")) - 1)   # less listdir's own
        self._count_gc()
        self._count_clients()

    def _count_gc(self) -> None:
        totals = _gc_totals()
        self._series.add_gc(*(now - seen for now, seen in zip(totals, self._gc_seen)))
        self._gc_seen = totals

    def _count_clients(self) -> None:
        """This worker's open connections and the requests it received, published, and the
        connections told to ``balance``: every tick, not every publish, so that a split evens out
        within a second of the burst that made it (``balance`` acts when two checks in a row see a
        surplus: 0.2 s). Published once a second, a 41/23 split of 64 connections took most of a
        5-second bench round to even out, and the busier worker did up to 65 % of that round's work."""
        series = self._series
        connections = sum(len(s.connections) for s in self._servers)
        series.set("worker_connections", connections)
        if self._balance is not None:
            series.add_rebalanced(self._balance.check(connections))
        received = sum(s.requests_count for s in self._servers)
        series.add_requests(received - self._received)
        self._received = received

    def _resident_bytes(self) -> int:
        # statm: size resident shared text lib data dt, in pages
        return int(os.pread(self._statm, 256, 0).split()[1]) * _PAGE


def _gc_totals() -> tuple[int, int]:
    """The cyclic collector's runs and freed objects since the process began, every generation."""
    stats = gc.get_stats()
    return sum(g["collections"] for g in stats), sum(g["collected"] for g in stats)
