"""What a draining worker's gateway does differently: answers that close, and a cut at the end.

Owns the gateway's side of a drain (reload or stop), and of a worker letting some connections go
to even out the workers' shares (``shed``, asked by ``process.balance``):
- from the drain's start every answer says ``Connection: close``, so a client never
  sends a request on a connection the worker is about to close. Requests parsed from
  then on are marked before any handler sees them (``watch``); answers to data requests
  already in flight are marked when their head is written (``closing``);
- while stopping (not on a reload, where the next generation already serves), ``/readyz``
  answers 503;
- which data requests are in flight, so that when the grace period ends (``cut``) a
  stream already started ends with the caller's error event and a request not yet
  answered gets a 503, instead of the connection going away under them.
Must not touch: listeners and connections (``process.drain`` decides when the listener
closes and when connections go), the engine's internals.
"""
from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from ..errors import Overloaded


class ShuttingDown(Overloaded):
    """A request still unanswered when the worker's drain grace period ended."""

    code = "shutting_down"

    def __init__(self):
        super().__init__("The gateway is shutting down: this request was still running when its drain "
                         "grace period (server.drain_grace_s) ended. Retry it.", retry_after=1)


class GatewayDrain:
    """The drain state of one worker's gateway; the worker's drain drives it."""

    __slots__ = ("active", "shed_left", "stopping", "grace_over", "in_flight", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.active = False       # every answer from now on says Connection: close
        self.shed_left = 0        # answers still to say Connection: close, to even out the workers (``shed``)
        self.stopping = False     # the host is going away: /readyz answers 503
        self.grace_over = False   # in-flight data requests were cut (see ``cut``)
        # the data requests being answered, by id (a request is not hashable): the gateway adds
        # and removes each, a dict operation per request (cheaper than looking up its task)
        self.in_flight: dict[int, web.Request] = {}
        self._loop = loop

    def watch(self, server: web.Server) -> None:
        """Mark the requests ``server`` parses during a drain as ``Connection: close`` ones, so
        every answer to them (a handler's, an error's, aiohttp's own) says so and the connection
        closes after it. Call before ``server`` accepts: each connection keeps the factory it
        was made with."""
        make = server.request_factory

        def request_factory(message, *args):
            if self.active:
                message = message._replace(should_close=True)
            return make(message, *args)

        server.request_factory = request_factory
        # the direct connections' (_core.client) check on every request: a C call, no Python frame
        server.draining = functools.partial(getattr, self, "active")

    def shed(self, n: int) -> None:
        """The next ``n`` data answers that would keep their connection open close it instead: this
        worker holds more than its share of the host's connections (``process.balance``), and the
        clients' new connections land on any worker. Replaces what was left of the last ``shed``."""
        self.shed_left = n

    def let_one_go(self) -> None:
        """One of the connections ``shed`` asked for goes after the answer being written."""
        self.shed_left -= 1

    def begin(self, *, stopping: bool) -> None:
        self.active = True
        self.stopping = self.stopping or stopping

    def closing(self, response: web.StreamResponse) -> web.StreamResponse:
        """``response`` says ``Connection: close`` if a drain began while its request was in flight.
        (A head already written cannot change: that connection closes after its next request.)"""
        if self.active and not response.prepared:
            response.force_close()
        return response

    def cut(self) -> list[asyncio.Task]:
        """The grace period is over: cancel every data request still in flight. Each one's handler
        sees ``cut_short()`` true and ends its answer cleanly (see ``Gateway``). Returns the tasks
        to wait for: those of the requests' connections (``request.task``), which await the handlers."""
        self.grace_over = True
        tasks = []
        for request in self.in_flight.values():
            if not request.task.done():
                request.protocol.close()    # the connection closes once this answer is out
                request.task.cancel()
                tasks.append(request.task)
        return tasks

    def cut_short(self) -> bool:
        """Inside a data handler that caught ``CancelledError``: was it ``cut``? If so the handler
        carries on to end its answer (the cancellation is withdrawn); if not, the client left."""
        if not self.grace_over:
            return False
        task = asyncio.current_task(self._loop)
        if task is not None:
            task.uncancel()
        return True
