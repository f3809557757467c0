"""Waiting for a host-wide slot from asyncio.

The fast path is the shared structure's one-CAS ``try_acquire``, which the engine calls on it
directly (and ``_core.attempts.Slot`` its ``release``). Otherwise the
request takes a ticket in the host-wide priority queue and awaits a future;
whichever process frees a slot hands it straight to the best ticket on the
host and writes that ticket's worker's eventfd, which wakes this loop
(``add_reader``) to resolve the futures of the tickets it was granted.
"""
from __future__ import annotations

import asyncio
import os

from .._core.constants import GRANTED_NOW, QUEUE_FULL
from ..errors import Overloaded


class CapacityExhausted(Overloaded):
    """Every slot is busy and the deployment's policy says do not wait here.

    ``reason`` is the metrics label: ``capacity`` (policy reject/fallback),
    ``queue_full`` or ``queue_timeout``. ``fallback`` tells the engine the
    deployment's policy asks for its fallbacks.
    """

    def __init__(self, message: str, reason: str, fallback: bool = False):
        super().__init__(message)
        self.reason = reason
        # "fallback" policy sends the request on at once; a queue that is full, or that held the
        # request for queue_timeout_s, means this deployment cannot serve it: what fallbacks are for
        # (the engine takes that back when the caller's own deadline ended the wait)
        self.fallback = fallback or reason in ("queue_full", "queue_timeout")


class AdmissionControl:
    """This worker's view of every deployment's shared admission structure."""

    def __init__(self, segment, worker: int, wake_fd: int, n_deployments: int):
        self.worker = worker
        self.wake_fd = wake_fd
        self.admissions = [segment.admission(i) for i in range(n_deployments)]
        self._waiting: list[dict[int, asyncio.Future]] = [{} for _ in range(n_deployments)]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.wake_fd, self._on_wake)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.wake_fd)

    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass  # another wake already drained it
        for index, waiting in enumerate(self._waiting):
            if not waiting:
                continue
            for ticket in self.admissions[index].take_granted(self.worker):
                future = waiting.pop(ticket, None)
                if future is None or future.done():
                    # the waiter left between grant and wake-up: the slot is ours, give it back
                    self.admissions[index].release(self.worker)
                else:
                    future.set_result(None)

    async def acquire(self, index: int, priority: int, policy: str, timeout_s: float | None) -> None:
        """Return holding one slot of deployment ``index``, or raise ``CapacityExhausted``."""
        admission = self.admissions[index]
        if admission.try_acquire(self.worker):
            return
        if policy != "queue":
            raise CapacityExhausted("All capacity of this deployment is in use.", "capacity",
                                    fallback=policy == "fallback")
        ticket = admission.enqueue(self.worker, priority)
        if ticket == GRANTED_NOW:
            return
        if ticket == QUEUE_FULL:
            raise CapacityExhausted("The deployment's queue is full.", "queue_full")
        future = asyncio.get_running_loop().create_future()
        waiting = self._waiting[index]
        waiting[ticket] = future
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except BaseException as e:
            if future.done() and not future.cancelled():
                admission.release(self.worker)  # granted just as we gave up
            elif waiting.pop(ticket, None) is not None and not admission.cancel(ticket):
                admission.release(self.worker)  # granted but not yet taken: ours to give back
            if isinstance(e, TimeoutError):
                raise CapacityExhausted(f"Waited {timeout_s:g}s in the queue for capacity.",
                                        "queue_timeout") from None
            raise

    def release(self, index: int) -> None:
        self.admissions[index].release(self.worker)

    def views(self, deployments, rate_gates: dict[str, int]) -> dict:
        """deployment name -> its admission as gauges show it: with a rate queue
        (``rate_gates``: name -> its admission index), the requests waiting there are queued too."""
        return {d.name: (self.admissions[i] if d.name not in rate_gates
                         else RateQueuedView(self.admissions[i], self.admissions[rate_gates[d.name]]))
                for i, d in enumerate(deployments)}


class RateQueuedView:
    """A deployment's admission plus its rate queue (waiting for the bucket counts as queued)."""

    __slots__ = ("admission", "rate_queue")

    def __init__(self, admission, rate_queue):
        self.admission = admission
        self.rate_queue = rate_queue

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def queue_depth(self) -> int:
        return self.counts()[1]

    def counts(self) -> tuple[int, int]:
        in_flight, depth = self.admission.counts()
        sleeping, waiting = self.rate_queue.counts()    # the rate queue's holder waits for tokens
        return in_flight, depth + sleeping + waiting

    def queue_depth_by_priority(self) -> list[int]:
        return [a + b for a, b in zip(self.admission.queue_depth_by_priority(),
                                      self.rate_queue.queue_depth_by_priority())]
