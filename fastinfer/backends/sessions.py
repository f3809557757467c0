"""Backend sessions: SGLang's ``open_session`` / ``close_session`` around a sticky session, as in Dynamo.

Owns, for the deployments with ``session.backend_sessions = true``:

- opening: before a session's first request on a replica, ``POST {server
  root}/open_session {"session_id", "capacity_of_str_len", "timeout"}`` (the
  backend's own timeout is ``affinity_ttl_s + 30``, so the gateway closes first).
  An open that fails fails the request (``BackendSessionFailed``, 502): nothing
  is generated. Every request of the session then carries ``"session_params":
  {"id": session_id}``. The session id sent upstream is the hex of the session's
  key, so the reaper (which only has the key) can close it, and two tenants'
  sessions never meet on a backend.
- closing, exactly once per opened session, whatever ends it: idle expiry (the
  host's reaper, ``reap_expired``), a re-pin (the old replica), a binding evicted
  from a full table, the request carrying ``x-session-close: true`` (after its
  generation), ``DELETE /v1/sessions/{id}``, and drain (``close_all``). A close
  that fails is retried ``CLOSE_ATTEMPTS`` times with backoff and then logged
  (a replica whose circuit is open is waited for, up to the backend's own
  timeout); closes run in the background and never hold a request up.

Exactly once comes from the session table: a binding's backend state moves
only by compare-and-set (NONE -> OPENING -> OPEN -> CLOSING), and a binding
taken out of the table (removed, expired, re-pinned, evicted) is handed, with
its state, to exactly one caller. That caller closes an OPEN session; an
OPENING one is closed by its opener, whose OPENING -> OPEN then fails; a
CLOSING one by whoever set CLOSING (a worker killed in the middle of an open or a close leaves
its OPENING / CLOSING behind: the next request of the session, having waited longer than any
call may take, takes the state over and opens afresh). An explicit end (x-session-close, DELETE,
drain) sets CLOSING while the binding stays, so a request of the same session
arriving meanwhile waits for the close before it opens a new one.

Must not touch: choosing replicas (``routing``), the client connection.
"""
from __future__ import annotations

import asyncio
import logging

from .._core.constants import SESSION_CLOSING, SESSION_NONE, SESSION_OPEN, SESSION_OPENING
from .._core.records import SessionInfo
from ..errors import BackendSessionFailed

log = logging.getLogger("fastinfer.backends")

OPEN_PATH = "/open_session"
CLOSE_PATH = "/close_session"
BACKEND_TIMEOUT_MARGIN_S = 30      # the backend's timeout = affinity_ttl_s + this: the gateway closes first
CLOSE_ATTEMPTS = 3
CLOSE_BACKOFF_S = 0.5              # doubled after each failed close
_WAIT_STEP_S = 0.005               # polling another request's open or close of the same session
_EXPIRE_BATCH = 256
_STALE_MARGIN_S = 1.0              # beyond a call's timeouts: an OPENING / CLOSING this old has no owner left
_STATE_NAMES = {SESSION_OPENING: "opening", SESSION_CLOSING: "closing"}


class _Deployment:
    __slots__ = ("index", "name", "control", "session", "timeouts")

    def __init__(self, index: int, name: str, control, session, timeouts):
        self.index = index
        self.name = name
        self.control = control      # control.ReplicaControl
        self.session = session      # config.SessionConfig
        self.timeouts = timeouts    # the deployment's timeouts: control calls made outside a request


class BackendSessions:
    """This worker's side of the host's backend sessions."""

    def __init__(self, table, metrics, loop: asyncio.AbstractEventLoop):
        self.table = table          # the segment's SessionTable
        self.metrics = metrics
        self._loop = loop
        self._deployments: dict[int, _Deployment] = {}
        self._closes: set[asyncio.Task] = set()

    def add(self, index: int, name: str, control, session_config, timeouts) -> None:
        """``index`` (a deployment with ``session.backend_sessions``) opens and closes backend sessions."""
        self._deployments[index] = _Deployment(index, name, control, session_config, timeouts)

    def __contains__(self, index: int) -> bool:
        return index in self._deployments

    # ----------------------------------------------------------- opening

    async def ensure_open(self, index: int, key: bytes, replica: int, timeouts) -> tuple[dict | None, bool]:
        """Make the session's backend session open on ``replica`` before a request goes there.

        Returns (the fields its requests carry, orphaned). ``orphaned``: the session ended or
        moved while this request opened its backend session, which only this request knows
        of now; the caller closes it (``close_later``) once the request is done. (None, False):
        another request moved the session off ``replica`` meanwhile; this one goes without.
        Raises ``BackendSessionFailed`` when the open fails (nothing is generated).
        """
        dep = self._deployments[index]
        table = self.table
        deadline = self._loop.time() + timeouts.connect_s + timeouts.first_byte_s + _STALE_MARGIN_S
        params = {"session_params": {"id": key.hex()}}
        took_over = False
        while True:
            info = table.get(key)
            if info is None or info.expired:
                # ended (DELETE, reaper) between the route and now: bind it again where we are
                table.bind(key, index, replica, dep.session.affinity_ttl_s)
                continue
            if info.replica != replica:
                log.debug("session %s moved to replica %d under a request on %d", key.hex(), info.replica, replica)
                return None, False
            state = info.backend_state
            if state == SESSION_OPEN and info.backend_replica == replica:
                return params, False
            if state == SESSION_NONE and table.backend_transition(key, SESSION_NONE, SESSION_OPENING, replica):
                orphaned = await self._open(dep, key, replica, timeouts)
                return params, orphaned
            if state not in (SESSION_NONE, SESSION_OPENING, SESSION_CLOSING):
                return None, False    # open elsewhere under a binding here: cannot happen, never guess
            if self._loop.time() >= deadline:
                if not took_over and table.backend_transition(key, state, SESSION_NONE):
                    # an open or close takes at most one call's timeouts, and we waited longer: the
                    # process that began it died in it (a killed worker). Its state is ours now.
                    log.warning("backend session %s stayed %s past a call's timeouts: its worker is gone; "
                                "opening it afresh", key.hex(), _STATE_NAMES[state])
                    took_over = True
                    deadline = self._loop.time() + timeouts.connect_s + timeouts.first_byte_s
                    continue
                raise BackendSessionFailed("The session's backend session is still being opened or closed by "
                                           "another request.", outcome="timeout")
            await asyncio.sleep(_WAIT_STEP_S)

    async def _open(self, dep: _Deployment, key: bytes, replica: int, timeouts) -> bool:
        """``open_session`` on ``replica`` for a session whose state this request set OPENING.
        True when the binding changed meanwhile and the opened session is this request's to close."""
        body = {"session_id": key.hex(), "capacity_of_str_len": dep.session.capacity,
                "timeout": dep.session.affinity_ttl_s + BACKEND_TIMEOUT_MARGIN_S}
        try:
            # breaker=False: the request's attempt on the replica already passed its circuit (perhaps
            # as the half-open probe, which a second check would refuse) and records the verdict itself
            outcome = await dep.control.call(replica, "POST", OPEN_PATH, body, timeouts, breaker=False)
        except BaseException:
            # the client left mid-call: the backend may have opened it; a close of nothing is harmless
            if self.table.backend_transition(key, SESSION_OPENING, SESSION_NONE):
                self._spawn_close(dep, replica, key, counted=False)
            raise
        self.metrics.backend_session_call(dep.name, "open", outcome.ok)
        if not outcome.ok:
            self.table.backend_transition(key, SESSION_OPENING, SESSION_NONE)
            raise BackendSessionFailed(
                f"Could not open a backend session on replica {dep.control.replica_name(replica)} "
                f"({outcome.detail}); nothing was generated.", outcome=outcome.outcome,
                replica_failed=outcome.replica_failed)
        return not self.table.backend_transition(key, SESSION_OPENING, SESSION_OPEN, replica)

    # ----------------------------------------------------------- closing

    def released(self, info: SessionInfo) -> None:
        """A binding left the table and was handed to us: close its backend session if it was open
        (an OPENING one is its opener's to close, a CLOSING one its closer's)."""
        dep = self._deployments.get(info.deployment)
        if dep is not None and info.backend_state == SESSION_OPEN:
            self._spawn_close(dep, info.backend_replica, info.key)

    def close_later(self, index: int, replica: int, key: bytes) -> None:
        """Close a backend session that only the caller knows of (``ensure_open``'s orphan)."""
        self._spawn_close(self._deployments[index], replica, key)

    async def end(self, index: int, key: bytes) -> SessionInfo | None:
        """End a session now (x-session-close, DELETE, drain): its backend session closed while the
        binding stays, so no request of it opens another meanwhile; then the binding removed.
        The binding as it was, or None when there was none."""
        table = self.table
        dep = self._deployments.get(index)
        while True:
            info = table.get(key)
            if info is None or info.backend_state == SESSION_CLOSING:
                return info      # none, or another end is closing it and will remove it
            if dep is not None and info.backend_state == SESSION_OPEN:
                if not table.backend_transition(key, SESSION_OPEN, SESSION_CLOSING):
                    continue     # it changed under us (re-pinned, ended): look again
                await self._close(dep, info.backend_replica, key)
            removed = table.remove(key)
            if removed is not None:
                self.released(removed)   # re-pinned and opened again while we closed: that one too
            return info

    def _spawn_close(self, dep: _Deployment, replica: int, key: bytes, counted: bool = True) -> None:
        task = self._loop.create_task(self._close(dep, replica, key, counted))
        self._closes.add(task)
        task.add_done_callback(self._closes.discard)

    async def _close(self, dep: _Deployment, replica: int, key: bytes, counted: bool = True) -> None:
        """``close_session``, retried with backoff; given up on (and logged) after CLOSE_ATTEMPTS
        failed calls. While the replica's circuit is open the close waits for it to let a probe
        through -- those waits are not attempts -- but never past the backend's own timeout, after
        which there is nothing left to close."""
        body = {"session_id": key.hex()}
        give_up_at = self._loop.time() + dep.session.affinity_ttl_s + BACKEND_TIMEOUT_MARGIN_S
        failures = 0
        try:
            while failures < CLOSE_ATTEMPTS:
                outcome = await dep.control.call(replica, "POST", CLOSE_PATH, body, dep.timeouts)
                if outcome.outcome == "circuit_open":
                    wait = min(max(dep.control.retry_after_s(replica), _WAIT_STEP_S), give_up_at - self._loop.time())
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                    continue
                self.metrics.backend_session_call(dep.name, "close", outcome.ok)
                # a 4xx will not change on a retry: the backend does not have the session (any more)
                if outcome.ok or outcome.outcome == "client_error":
                    return
                failures += 1
                if failures < CLOSE_ATTEMPTS:
                    await asyncio.sleep(CLOSE_BACKOFF_S * 2 ** (failures - 1))
            log.warning("closing backend session %s on %s/%s failed (%s, %d failed calls); the backend's own "
                        "timeout will end it", key.hex(), dep.name, dep.control.replica_name(replica),
                        outcome.detail, failures)
        finally:
            if counted:
                self.metrics.backend_session_gone(dep.name)

    # ------------------------------------------------------- host work

    def reap_expired(self, on_expired) -> int:
        """The reaper's round (one worker per host): take every expired binding out of the table
        and close the backend sessions they held. ``on_expired(info)`` hears of each."""
        n = 0
        while True:
            expired = self.table.expire(_EXPIRE_BATCH)
            for info in expired:
                self.released(info)
                on_expired(info)
            n += len(expired)
            if len(expired) < _EXPIRE_BATCH:
                return n

    async def close_all(self) -> int:
        """Drain: end every session of this host's table whose backend session is open, and wait
        for every close in flight. (A reload moves the bindings it carries out of the old
        generation's table first, so only what the new configuration dropped is closed.)"""
        if not self._deployments:
            return 0
        ends = [self.end(info.deployment, info.key) for info in self.table.entries()
                if info.deployment in self._deployments and info.backend_state == SESSION_OPEN]
        await asyncio.gather(*ends, return_exceptions=True)
        while self._closes:
            await asyncio.gather(*list(self._closes), return_exceptions=True)
        return len(ends)
