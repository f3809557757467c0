"""Background work done once per host, not once per worker: under a lease of the shared segment.

Owns: ``run_under_lease``, the loop every worker runs for each kind of host
work (the session reaper, the health prober): every tick it takes or renews
the lease (``Segment.lease``) and, holding it, does one round of the work.
Exactly one worker of the host holds a lease at a time; when it dies the
supervisor frees its leases, and when it stalls past the lease's time to live
another worker takes over at its next tick. Must not touch: what the work is.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger("fastinfer.backends")


def lease_ttl_s(tick_s: float) -> float:
    """How long a lease holds without renewal: three ticks, at least a second (a busy loop
    that misses a tick or two must not hand the work to another worker)."""
    return max(1.0, 3 * tick_s)


async def run_under_lease(lease, worker: int, tick_s: float, work: Callable[[], None], stop: asyncio.Event,
                          what: str) -> None:
    """Until ``stop`` is set: every ``tick_s``, hold ``lease`` and call ``work`` (which must not
    block: it starts what takes time as tasks of its own)."""
    ttl = lease_ttl_s(tick_s)
    holding = False
    try:
        while not stop.is_set():
            held = lease.try_hold(worker, ttl)
            if held != holding:
                holding = held
                log.debug("worker %d %s the %s", worker, "holds" if held else "no longer holds", what)
            if held:
                try:
                    work()
                except Exception:
                    log.exception("%s failed; retrying at the next tick", what)
            try:
                await asyncio.wait_for(stop.wait(), tick_s)
            except TimeoutError:
                pass
    finally:
        lease.release(worker)
