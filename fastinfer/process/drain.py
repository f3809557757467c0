"""A worker's drain: the order in which a worker told to stop, or retired by a reload, lets go.

Owns the shutdown of one worker's listeners and client connections. aiohttp's
``AppRunner.cleanup()`` is not used for it: it closes idle kept-alive connections at
once, without an answer saying ``Connection: close`` (so a client that sends its next
request at that moment meets a reset), and waits for busy ones up to its timeout twice.
Here:

1. the gateway's drain begins: every answer says ``Connection: close``; when the host
   stops (not when a reload retires this generation) ``/readyz`` answers 503;
2. stopping only: ``server.drain_delay_s`` of serving on, listener open, so that load
   balancers see the 503 before connections are refused;
3. the worker stops accepting (its copy of the listening socket is closed; the socket
   itself closes when the last process holding it lets go);
4. until ``server.drain_grace_s`` has passed or no connection is left: requests and
   streams in flight finish, idle kept-alive connections stay open, and the next request
   on each is served and answered with ``Connection: close``;
5. when the grace period ends: streams still running end with the caller's error event,
   data requests not yet answered get a 503, and every connection left is closed.

The delay and the grace count from the signal's arrival, as the supervisor's kill deadline
does. A worker stopped while it was still starting (the signal was kept, ``listen_for_signals``)
begins late: it serves what is left of the delay, or at least one turn of the loop, so the
connections its listener queued before the stop are accepted and drained, not reset.

Must not touch: request handling (the gateway decides what an answer says), the shared
segment.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .signals import RETIRE_SIGNAL, STOP_SIGNALS

if TYPE_CHECKING:   # only the workers import this module: its types from the web layer are for reading
    from collections.abc import Sequence

    from aiohttp import web

    from ..gateway.drain import GatewayDrain

log = logging.getLogger("fastinfer.worker")

WRAP_UP_S = 0.2          # after the grace period: how long cut requests get to write their last event
CLEANUP_TIMEOUT_S = 0.05  # aiohttp's own shutdown, once every connection is closed: nothing left to wait for
_POLL_S = 0.05


class WorkerDrain:
    """Waits for a stop or retire signal, then runs the drain (see the module's docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, delay_s: float, grace_s: float):
        self._loop = loop
        self.delay_s = delay_s
        self.grace_s = grace_s
        self.stopping = False
        self._asked = asyncio.Event()
        self._asked_at: float | None = None   # time.monotonic() of the first signal: the drain's clock
        self._gateway: GatewayDrain | None = None

    def listen_for_signals(self, stops: Sequence[float] = ()) -> None:
        """``stops``: when stop signals came before these handlers (the child's first ones keep
        them, ``Supervisor._spawn``); such a stop is asked now, timed from its arrival."""
        for sig in STOP_SIGNALS:
            self._loop.add_signal_handler(sig, self.ask, True)
        self._loop.add_signal_handler(RETIRE_SIGNAL, self.ask, False)
        if stops:
            self.ask(True, at=stops[0])

    def ask(self, stopping: bool, at: float | None = None) -> None:
        """A stop (the host goes away) or a retirement (a reload's new generation serves)."""
        if self._asked_at is None:
            self._asked_at = time.monotonic() if at is None else at
        if stopping:
            self.stopping = True
            if self._gateway is not None:   # a stop while a reload drains this worker: not ready either
                self._gateway.begin(stopping=True)
        self._asked.set()

    async def wait(self) -> None:
        await self._asked.wait()

    async def run(self, gateway: GatewayDrain, runners: list[web.AppRunner], stopped_accepting=None) -> None:
        """Drain: after the delay (a stop's), close the listeners (then ``stopped_accepting()``), wait
        out the grace period for the connections open, cut what is left."""
        loop = self._loop
        self._gateway = gateway
        gateway.begin(stopping=self.stopping)
        delay = self.delay_s if self.stopping else 0.0
        if delay > 0:
            log.info("draining: serving on for drain_delay_s=%g with /readyz at 503", delay)
        # what is left of the delay (see the module's docstring); at least one turn of the loop,
        # in which a worker that was starting accepts the connections queued for it
        await asyncio.sleep(max(0.0, self._asked_at + delay - time.monotonic()))
        for runner in runners:
            for site in list(runner.sites):
                await site.stop()
        if stopped_accepting is not None:
            stopped_accepting()
        # a connection accepted just before the listener closed is set up on the next turns of
        # the loop: let it register, so it is waited for like the others
        for _ in range(3):
            await asyncio.sleep(0)
        deadline = loop.time() + max(0.0, self._asked_at + delay + self.grace_s - time.monotonic())
        log.info("draining: %d connections open, grace %gs", _open_connections(runners), self.grace_s)
        while _open_connections(runners) and loop.time() < deadline:
            await asyncio.sleep(min(_POLL_S, max(0.0, deadline - loop.time())))
        if _open_connections(runners):
            cut = gateway.cut()
            log.info("drain grace period over: ending %d requests in flight, closing %d connections",
                     len(cut), _open_connections(runners))
            if cut:
                await asyncio.wait(cut, timeout=WRAP_UP_S)
            for runner in runners:
                for connection in runner.server.connections:
                    connection.force_close()
        for runner in runners:
            await runner.cleanup()
        log.debug("drained")


def _open_connections(runners: list[web.AppRunner]) -> int:
    return sum(len(runner.server.connections) for runner in runners)
