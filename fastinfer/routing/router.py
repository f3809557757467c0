"""One deployment's replica choice in this worker, decided with the host's view of load.

Owns: ``DeploymentRouter``, which turns a request into a route (``route``) and
is itself the route of the load policies -- ``round_robin`` (weighted, one
turn host-wide), ``least_loaded`` (in flight / weight, ties round-robin
host-wide), ``power_of_two`` and ``latency``. Each is one call into the shared
segment's ``ReplicaLoad.pick_and_start``, which chooses and counts in one
atomic step, so the workers of a host spread concurrent requests exactly. A
``sticky`` deployment routes a request with a session id through
``sticky.StickyRoute``, a ``prefix`` deployment a request with a whole prompt
block through ``prefix.PrefixRoute``; both fall back to least loaded.

A route's ``choose(avoid)`` answers a replica already counted on (or
``NO_REPLICA``); whoever got it gives the count back exactly once with
``finish`` (an answered attempt, with its latency) or ``release``.

Must not touch: HTTP, breakers (the caller checks the circuit of what it got,
and ``release``s and avoids a replica whose circuit refuses), providers.
"""
from __future__ import annotations

import random
from typing import Protocol

from .._core.constants import LEAST_LOADED, NO_REPLICA, POWER_OF_TWO, ROUTING_POLICIES
from .._core.records import SessionInfo
from .directory import LocalSessionDirectory, SessionDirectory
from .prefix import PrefixRoute, prompt_hashes
from .sticky import StickyRoute, session_key

__all__ = ["DeploymentRouter", "NO_REPLICA", "SessionEvents"]


class SessionEvents(Protocol):
    """What the router tells its owner about bindings it changed (metrics, backend sessions).
    Each binding taken out of the table is told exactly once, with its backend state, to the
    one caller the table handed it to."""

    def repinned(self, previous: SessionInfo) -> None:
        """A session moved off ``previous.replica``: count it; close a backend session left there."""

    def released(self, info: SessionInfo, evicted: bool) -> None:
        """A binding left the table (``evicted``: a full table made room; else it had expired)."""


class _NoEvents:
    def repinned(self, previous: SessionInfo) -> None:
        pass

    def released(self, info: SessionInfo, evicted: bool) -> None:
        pass


class DeploymentRouter:
    """Replica choice for one deployment, in one worker, over the host's shared state."""

    __slots__ = ("name", "index", "worker", "load", "policy", "routing", "names", "weights", "all_mask", "table",
                 "ttl_s", "prefix", "events", "directory", "_random", "session_key", "needs_claim")

    def __init__(self, segment, worker: int, index: int, config, *, events: SessionEvents | None = None,
                 directory: SessionDirectory | None = None):
        # the route of the load policies is the router itself: it carries no session. Slots, not
        # class attributes: CPython 3.11 specializes a slot's read, never a class attribute's read
        # through an instance without a __dict__ (the engine reads both on every request)
        self.session_key = None
        self.needs_claim = False
        self.name = config.name
        self.index = index
        self.worker = worker
        self.load = segment.replicas(index)
        self.routing = config.routing
        # sticky and prefix choose by load where they have nothing better to go on
        self.policy = ROUTING_POLICIES.get(config.routing, LEAST_LOADED)
        self.names = [r.name for r in config.replicas]
        self.weights = [r.weight for r in config.replicas]
        self.all_mask = (1 << len(self.names)) - 1
        self.table = segment.sessions if config.routing == "sticky" else None
        self.ttl_s = config.session.affinity_ttl_s
        self.prefix = segment.prefix(index) if config.routing == "prefix" else None
        self.events = events or _NoEvents()
        self.directory = directory or LocalSessionDirectory()
        self._random = random.Random()   # seeded in this process: forked workers must not share a sequence

    # ------------------------------------------------------------ routes

    def route(self, req):
        """The route of ``req``: a sticky or prefix route when the deployment and request have
        what it needs (a session id; a prompt of at least one whole block), else this router."""
        if self.table is not None:
            if req.session_id:
                return StickyRoute(self, session_key(req.key or "", self.name, req.session_id))
        elif self.prefix is not None:
            hashes = prompt_hashes(req.body)
            if hashes:
                return PrefixRoute(self, hashes)
        return self

    def choose(self, avoid: int, tried: int = 0) -> int:
        """A replica not in ``avoid`` (a bit mask) and healthy, counted on; NO_REPLICA when none is.
        (``tried``, the replicas the request failed on, matters to a session's route only.)"""
        rand = self._random.getrandbits(64) if self.policy == POWER_OF_TWO else 0
        return self.load.pick_and_start(self.worker, self.policy, avoid, rand)

    def served(self, replica: int) -> None:
        """The request was answered by ``replica``: nothing to remember without a session."""

    # ------------------------------------------------------------ counts

    def pick(self, policy: int, avoid: int) -> int:
        """``policy``'s choice among the replicas not in ``avoid``, counted on (or NO_REPLICA)."""
        return self.load.pick_and_start(self.worker, policy, avoid & self.all_mask, 0)

    def start(self, replica: int) -> None:
        """Count a request on ``replica`` (chosen by a session or prefix, not by load)."""
        self.load.start(self.worker, replica)

    def release(self, replica: int) -> None:
        """Give back a count that served nothing (the circuit refused it, another replica won)."""
        self.load.finish(self.worker, replica, -1.0)

    def finish(self, replica: int, latency_s: float = -1.0) -> None:
        """Give back an attempt's count; a latency >= 0 (a success) feeds the replica's EWMA."""
        self.load.finish(self.worker, replica, latency_s)

    def usable(self, replica: int, avoid: int) -> bool:
        """``replica`` may be given this request: not avoided, not failing its health checks."""
        return not (avoid >> replica) & 1 and self.load.healthy(replica)
