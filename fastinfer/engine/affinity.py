"""Sessions and replica health as the engine runs them: the glue between ``routing`` and ``backends``.

Owns: ``Affinity``, this worker's

- ``SessionEvents`` for every router: a re-pin is counted
  (``fastinfer_session_repins_total``) and an eviction too
  (``fastinfer_session_evictions_total``); the backend session a binding held
  when it left its replica is closed;
- backend sessions of a request: opened before it is sent (``open_backend``),
  and the session ended after the request that carries ``x-session-close``
  (``end_later``: once its generation is over) or at ``DELETE
  /v1/sessions/{id}`` (``end``);
- host work, each under its lease so one worker of the host does it: the
  session reaper (idle expiry, LEASE_SESSION_REAPER) and the health prober
  (LEASE_HEALTH_PROBER); on drain, closing every backend session still open.

Must not touch: the attempt loop, HTTP, replica choice itself.
"""
from __future__ import annotations

import asyncio
import logging

from .._core.constants import LEASE_HEALTH_PROBER, LEASE_SESSION_REAPER
from .._core.records import SessionInfo
from ..backends import BackendSessions, HealthProber, ReplicaControl, run_under_lease
from ..routing import LocalSessionDirectory, SessionDirectory, session_key

log = logging.getLogger("fastinfer.engine")

_REAPER_TICK_S = (0.05, 1.0)     # a quarter of the shortest affinity_ttl_s, within these bounds


class Affinity:
    """Session bindings, backend sessions and health checks of this worker's deployments."""

    def __init__(self, segment, worker: int, metrics, sessions, loop: asyncio.AbstractEventLoop,
                 directory: SessionDirectory | None = None):
        self.segment = segment
        self.worker = worker
        self.metrics = metrics
        self.sessions = sessions              # session.SessionRegistry
        self.directory = directory or LocalSessionDirectory()
        self.backends = BackendSessions(segment.sessions, metrics, loop)
        self.prober = HealthProber(loop)
        self._loop = loop
        self._names: list[str] = []           # deployment index -> name
        self._sticky: list[tuple[int, str, float]] = []   # (index, name, affinity_ttl_s) of sticky deployments
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._ends: set[asyncio.Task] = set()

    def add(self, index: int, config, provider, breakers) -> None:
        """Deployment ``index`` (in config order): its backend sessions and health checks."""
        self._names.append(config.name)
        if config.routing == "sticky":
            self._sticky.append((index, config.name, config.session.affinity_ttl_s))
        if not (config.session.backend_sessions or config.health_check):
            return
        control = ReplicaControl(config.name, provider.kind, self.sessions, breakers)
        if config.session.backend_sessions:
            self.backends.add(index, config.name, control, config.session, config.timeouts)
        if config.health_check:
            prefix = self.segment.prefix(index) if config.routing == "prefix" else None
            self.prober.add(config.name, control, config.health_check, self.segment.replicas(index), prefix,
                            self.worker)

    # ----------------------------------------------- SessionEvents (routers)

    def repinned(self, previous: SessionInfo) -> None:
        self.metrics.session_repin(self._names[previous.deployment])
        self.backends.released(previous)

    def released(self, info: SessionInfo, evicted: bool) -> None:
        if evicted:
            self.metrics.session_evicted(self._names[info.deployment])
        self.backends.released(info)

    # ------------------------------------------------------------ requests

    def has_backend_sessions(self, index: int) -> bool:
        return index in self.backends

    async def open_backend(self, index: int, key: bytes, replica: int, timeouts, after: list) -> dict | None:
        """The backend session of ``key`` open on ``replica``; the fields its request carries.
        A backend session only this request knows of is closed when it ends (``after``)."""
        extra, orphaned = await self.backends.ensure_open(index, key, replica, timeouts)
        if orphaned:
            after.append(lambda: self.backends.close_later(index, replica, key))
        return extra

    def end_later(self, index: int, key: bytes) -> None:
        """End the session in the background (after the request that asked, x-session-close)."""
        task = self._loop.create_task(self._end(index, key))
        self._ends.add(task)
        task.add_done_callback(self._ends.discard)

    async def _end(self, index: int, key: bytes) -> SessionInfo | None:
        info = await self.backends.end(index, key)
        if info is not None:
            self.directory.ended(key)
        return info

    async def end(self, namespace: str, session_id: str) -> list[str]:
        """``DELETE /v1/sessions/{id}``: end the session in every sticky deployment now; the names of
        the deployments where it was bound."""
        ended = []
        for index, name, _ in self._sticky:
            if await self._end(index, session_key(namespace, name, session_id)) is not None:
                ended.append(name)
        return ended

    # ------------------------------------------------------------ host work

    def start(self) -> None:
        """Run the reaper and the prober (each does its rounds only while this worker holds its lease)."""
        if self._sticky:
            tick = min(max(min(ttl for _, _, ttl in self._sticky) / 4, _REAPER_TICK_S[0]), _REAPER_TICK_S[1])
            self._tasks.append(self._loop.create_task(run_under_lease(
                self.segment.lease(LEASE_SESSION_REAPER), self.worker, tick, self._reap, self._stop,
                "session reaper")))
        if self.prober:
            self._tasks.append(self._loop.create_task(run_under_lease(
                self.segment.lease(LEASE_HEALTH_PROBER), self.worker, self.prober.tick_s, self.prober.sweep,
                self._stop, "health prober")))

    def _reap(self) -> None:
        def expired(info: SessionInfo) -> None:
            self.directory.ended(info.key)
        n = self.backends.reap_expired(expired)
        if n:
            log.debug("reaper: %d idle sessions expired", n)

    async def drain(self) -> None:
        """The worker is stopping: stop the host work, let the sessions being ended finish, and
        close every backend session this generation's table still holds open."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.prober.stop()
        if self._ends:
            await asyncio.gather(*list(self._ends), return_exceptions=True)
        closed = await self.backends.close_all()
        if closed:
            log.info("drain: closed %d backend sessions", closed)
