"""Sticky sessions: the requests of one session go to one replica while the session lives.

Owns: the session key (a 128-bit hash of the gateway key's name, the
deployment and the session id, so two tenants using the same session id never
share a binding), what a client's session id may be, and ``StickyRoute``:

- bind on first use to the least loaded replica (or, with a shared
  ``SessionDirectory``, to the replica the cluster says), first binding wins
  host-wide (``SessionTable.bind``);
- keep it while it lives: every request refreshes its idle TTL
  (``session.affinity_ttl_s``);
- re-pin it (``SessionTable.rebind``, a compare-and-set) when the bound replica
  may not serve: its circuit refused the attempt, it fails its health checks, or
  a reload removed it (the binding is dropped at the roll and bound afresh). The
  session stays where it was re-pinned.
- a retry of a request that failed on the bound replica, which may still serve
  others, goes elsewhere on trial: the session moves only once the retry is
  answered there (``served``), so a retry that fails too leaves it home.

Bindings it displaces or moves are told to the router's ``SessionEvents``.
Must not touch: HTTP, backend sessions (their owner hears of every binding
that leaves a replica), breakers.
"""
from __future__ import annotations

import hashlib

from .._core.constants import LEAST_LOADED, NO_REPLICA

MAX_SESSION_ID_BYTES = 256
_RACES = 3   # another process bound or moved the session between our look and our write: look again


def session_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a session id (more than 256 bytes, control characters), or None."""
    if len(value) <= MAX_SESSION_ID_BYTES and value.isascii() and value.isprintable():
        return None   # the common case, decided without encoding
    if len(value.encode("utf-8", "surrogateescape")) > MAX_SESSION_ID_BYTES:
        return f"is longer than {MAX_SESSION_ID_BYTES} bytes"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        return "contains control characters"
    return None


def session_key(namespace: str, deployment: str, session_id: str) -> bytes:
    """The 16-byte key of a session in the host's table: gateway key name, deployment and
    session id, each length-prefixed so no two triples run together."""
    text = f"{len(namespace)}:{namespace}{len(deployment)}:{deployment}{session_id}"
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).digest()


def _bit(replica: int) -> int:
    return 1 << replica if replica >= 0 else 0


class StickyRoute:
    """The route of one request that carries a session id (``x-session-id``)."""

    __slots__ = ("router", "session_key", "bound", "claimed", "trial")

    def __init__(self, router, key: bytes):
        self.router = router
        self.session_key = key
        self.bound = router.table.touch(key)   # the live binding, refreshed; -1: none (or expired)
        self.claimed = -1                      # the cluster's answer for an unbound session
        self.trial = -1                        # where a retry went without moving the session
        if self.bound >= 0 and router.directory.shared:
            router.directory.touched(key, router.ttl_s)

    @property
    def needs_claim(self) -> bool:
        """Unbound here while bindings are shared beyond the host: ask the cluster first (``claim``)."""
        return self.bound < 0 and self.router.directory.shared

    async def claim(self) -> None:
        """Ask the directory where the session is bound, proposing the least loaded replica."""
        router = self.router
        proposal = router.pick(LEAST_LOADED, 0)
        if proposal == NO_REPLICA:
            return
        router.release(proposal)   # only a proposal: choose() counts what is finally used
        name = await router.directory.claim(self.session_key, router.name, router.names[proposal], router.ttl_s)
        self.claimed = router.names.index(name) if name in router.names else -1

    def choose(self, avoid: int, tried: int = 0) -> int:
        """The session's replica, counted on; bound or re-pinned first when it has none it may use.
        ``tried``: the replicas this request failed on (part of ``avoid``)."""
        router = self.router
        bound = self.bound
        if bound >= 0 and router.usable(bound, avoid):
            router.start(bound)
            return bound
        if bound >= 0 and (tried >> bound) & 1 and router.usable(bound, avoid & ~tried):
            # only this request failed there: retry elsewhere, the session stays until that answers
            self.trial = router.pick(LEAST_LOADED, avoid | _bit(bound))
            return self.trial
        if bound < 0 and self.claimed >= 0 and router.usable(self.claimed, avoid):
            pick = self.claimed
            router.start(pick)
        else:
            pick = router.pick(LEAST_LOADED, avoid | _bit(bound))
            if pick == NO_REPLICA:
                return NO_REPLICA
        for _ in range(_RACES):
            held = self._pin(bound, pick)
            if held == pick:
                break
            if router.usable(held, avoid):   # another process bound or moved it first: follow it
                router.release(pick)
                router.start(held)
                pick = held
                break
            bound = held                     # ... to a replica this attempt may not use: move it on
        self.bound = pick
        return pick

    def served(self, replica: int) -> None:
        """The request was answered by ``replica``: a retry that went there on trial moves the
        session after it (unless another process moved it first)."""
        if replica != self.trial or replica < 0:
            return
        self.trial = -1
        if self._pin(self.bound, replica) == replica:
            self.bound = replica

    def _pin(self, bound: int, pick: int) -> int:
        """Bind the session to ``pick`` (``bound`` < 0) or move it from ``bound``; the replica the
        table holds for it afterwards (``pick`` unless another process wrote first)."""
        router = self.router
        key = self.session_key
        if bound >= 0:
            held, previous = router.table.rebind(key, bound, pick)
            if previous is not None:
                router.events.repinned(previous)
                router.directory.moved(key, router.name, router.names[pick], router.ttl_s)
                return held
            if held >= 0:
                return held
            # the binding ended since we looked (expired and reaped, or removed): bind afresh
        held, displaced = router.table.bind(key, router.index, pick, router.ttl_s)
        if displaced is not None:
            evicted = displaced.key != key and not displaced.expired
            router.events.released(displaced, evicted)
            if displaced.key != key:
                router.directory.ended(displaced.key)
        return held
