"""The public listener: one listening socket per worker slot, in one SO_REUSEPORT group.

Why per worker: with one shared socket every idle worker wakes on a new connection and
the first awake takes everything pending, so under keep-alive load one worker ended up
with nearly every connection. With a socket per slot the kernel spreads new connections
over the slots by a hash of their addresses, and each worker accepts only from its own.

Why per *slot*, and held by the supervisor (what nginx does with ``reuseport``, and Envoy by
handing its listeners to the new process on a hot restart): closing a socket of a
reuseport group resets the connections in its accept queue. The supervisor keeps every
slot's socket open for its whole life; worker ``i`` of every generation accepts on slot
``i``'s socket, so a reload's new worker shares the socket with the old one it replaces
(the old one stops accepting by closing its own copy; what is queued stays for the new
one), and a crashed worker's queued connections wait for its replacement instead of being
reset. Only a stop closes the sockets, after the drain's ``drain_delay_s``, as before.

A slot whose worker keeps dying at start while others serve would hold its share of new
connections in a queue nobody accepts from: the supervisor parks it (``park_slot``), taking it
out of the group until a worker of that slot serves again.

Where the kernel has no ``SO_REUSEPORT``, every slot gets the same single socket (the old
shared-socket model).

Owns: binding, parking a slot, and what each worker keeps of the listeners. Must not touch: accepting,
draining (``process.drain``).
"""
from __future__ import annotations

import socket

BACKLOG = 4096


class ListenError(Exception):
    """A listening socket could not be bound (port in use, address not on this host, ...)."""


def bind_socket(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A socket bound to ``host:port``, listening unless ``listen`` is False (a parked slot's:
    ``park_slot``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as e:  # socket.gaierror too: a host name that does not resolve
        sock.close()
        raise ListenError(f"cannot listen on {url_host(host)}:{port}: {e.strerror or e}") from None
    if listen:
        sock.listen(BACKLOG)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def bind_slots(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` listening sockets on one port, one per worker slot (see the module's docstring)."""
    if n < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return [bind_socket(host, port)] * max(n, 1)
    # The first socket is bound without SO_REUSEPORT: a port another process already listens
    # on (another fastinfer with its own reuseport group included) is refused, not shared.
    # Sockets join a reuseport group only if all of them set the option, so the first one
    # is re-bound with it as soon as the port is known to be free.
    probe = bind_socket(host, port)
    port = probe.getsockname()[1]
    probe.close()
    slots: list[socket.socket] = []
    try:
        for _ in range(n):
            slots.append(bind_socket(host, port, reuse_port=True))
    except ListenError:
        for sock in slots:
            sock.close()
        raise
    return slots


def park_slot(slots: list[socket.socket], index: int, host: str) -> bool:
    """Take slot ``index`` out of the reuseport group until a worker serves on it: its socket is
    closed and a fresh one bound in its place without listening. The kernel spreads connections
    only over the group's listening sockets, so new ones go to the slots whose workers serve, and
    the worker that next starts on this slot listens on it as it starts to accept (asyncio's and
    uvloop's servers call ``listen`` on the socket they are given). What waited in the closed
    socket's queue is reset: those clients retry, instead of waiting on a worker that cannot start.
    False, and nothing changed, when the slot is not its own socket (one shared socket: no
    SO_REUSEPORT, or one worker), is parked already, or cannot be bound again."""
    sock = slots[index]
    if len(slots) < 2 or slots.count(sock) > 1 or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return False
    try:
        slots[index] = bind_socket(host, sock.getsockname()[1], reuse_port=True, listen=False)
    except ListenError:
        return False
    sock.close()
    return True


def keep_only(slots: list[socket.socket], index: int) -> socket.socket:
    """In worker ``index`` after the fork: close the other slots' sockets (a copy kept here would
    keep a slot open, and its queue unserved, after its own workers let go) and return its own."""
    own = slots[index]
    for sock in slots:
        if sock is not own:
            sock.close()
    return own


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
