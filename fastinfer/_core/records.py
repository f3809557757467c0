"""Plain records the shared-memory core returns (the compiled module and its reference alike).

Owns: value types with names, so callers read ``info.replica`` rather than ``info[2]``.
Must not touch: shared memory; they are copies, made when a call returns.
"""
from __future__ import annotations

from typing import NamedTuple


class SessionInfo(NamedTuple):
    """A session binding as it was when the call returned (``SessionTable``)."""

    key: bytes             # the caller's 16-byte session key
    deployment: int        # deployment index the binding belongs to
    replica: int           # replica requests of the session go to
    backend_state: int     # constants.SESSION_NONE / OPENING / OPEN / CLOSING
    backend_replica: int   # replica the backend session is open (opening, closing) on; -1: none
    idle_s: float          # seconds since the binding was last used
    ttl_s: float           # idle time after which it expires

    @property
    def expired(self) -> bool:
        return self.idle_s >= self.ttl_s


class BreakerState(NamedTuple):
    """What a breaker carries into a new segment (``Breaker.export`` / ``restore``). Times
    are durations, not clock readings, so the record means the same in any segment."""

    state: int             # constants.CLOSED / OPEN / HALF_OPEN when exported
    open_left_s: float     # seconds until it admits a probe (0.0 closed or half-open)
    cur_open_s: float      # the open time it has grown to (doubles on each failed probe)
    failures: int          # consecutive failures counted while closed
