"""The states of one upstream HTTP/1.1 connection, its events, and the one table of transitions.

In the manner of h11's ``_state.py``: every state, event and body framing is a
named constant (its ``repr`` is its name, so a failure says ``RECEIVING_BODY``,
never ``1``), and ``TRANSITIONS`` is the only place that says which event
moves the connection from which state to which. ``H1Connection`` takes each step of an
exchange (a handful per request, never per chunk) as ``state.moves[event]``: the table's row for
that state, read without a function call; an event the row lacks is a ``ProtocolStateError``.

Shared by the compiled connection (``_core.upstream``) and its reference (``_core.ref.upstream``),
with the two limits on how much an answer may send before its framing says where it is.

Owns: the states and the table, the framing limits. Must not touch: sockets, parsing.
"""
from __future__ import annotations


class _Name:
    """A named constant; compared by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


class State(_Name):
    __slots__ = ("moves",)

    def __init__(self, name: str):
        super().__init__(name)
        self.moves = _Moves(self)   # filled from TRANSITIONS below


class _Moves(dict):
    """One state's row of ``TRANSITIONS``: event -> the state it leads to; any other event is refused."""

    __slots__ = ("state",)

    def __init__(self, state: State):
        super().__init__()
        self.state = state

    def __missing__(self, event: Event) -> State:
        raise ProtocolStateError(f"{event!r} is not allowed in {self.state!r}")

    def __setitem__(self, event, state):
        raise TypeError("a state's moves are TRANSITIONS' own: change the table")


class Event(_Name):
    __slots__ = ()


class Framing(_Name):
    __slots__ = ()


# ------------------------------------------------------------------ states
IDLE = State("IDLE")                        # open, no exchange: fresh, or waiting in the pool
AWAITING_HEAD = State("AWAITING_HEAD")      # the request is written; the final response head has not come
RECEIVING_BODY = State("RECEIVING_BODY")    # the head went to the sink; the body is arriving
DONE = State("DONE")                        # the final response is complete
CLOSED = State("CLOSED")                    # the exchange failed or was abandoned; the connection is dropped

# ------------------------------------------------------------------ events
SEND = Event("SEND")            # a request was written
HEAD = Event("HEAD")            # the final (non-1xx) response head was parsed
END = Event("END")              # the response body ended where its framing says
RELEASE = Event("RELEASE")      # a complete exchange handed the connection back for reuse
FAIL = Event("FAIL")            # timeout, malformed bytes, the peer closed, or the caller aborted

# ------------------------------------------------------ how a body is framed, and its limits
MAX_HEAD = 64 * 1024        # bytes of response head (status line and headers, 1xx answers included)
MAX_FRAMING = 8 * 1024      # bytes between two pieces of body: a chunk-size line with its extensions, trailers

LENGTH = Framing("LENGTH")              # Content-Length (or a status that has no body)
CHUNKED = Framing("CHUNKED")            # Transfer-Encoding: chunked
UNTIL_CLOSE = Framing("UNTIL_CLOSE")    # neither: the body ends when the upstream closes

TRANSITIONS: dict[tuple[State, Event], State] = {
    (IDLE, SEND): AWAITING_HEAD,
    (AWAITING_HEAD, HEAD): RECEIVING_BODY,
    (RECEIVING_BODY, END): DONE,
    (DONE, RELEASE): IDLE,
    (IDLE, FAIL): CLOSED,
    (AWAITING_HEAD, FAIL): CLOSED,
    (RECEIVING_BODY, FAIL): CLOSED,
    (DONE, FAIL): CLOSED,
    (CLOSED, FAIL): CLOSED,
}


class ProtocolStateError(RuntimeError):
    """An event the current state does not allow: a bug in the client, never the upstream's doing."""


for (_state, _event), _after in TRANSITIONS.items():
    dict.__setitem__(_state.moves, _event, _after)
del _state, _event, _after
