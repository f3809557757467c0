"""Client connections kept spread over the workers: a worker holding well over its share of the
host's open connections closes the surplus after their next answer (``Connection: close``), and the
clients' new connections are spread again by the listeners' ``SO_REUSEPORT`` hash.

Why: the kernel spreads new connections over the workers' sockets by a hash of their addresses, and
keep-alive keeps each where it landed. Many clients even it out; a few dozen connections from one
host do not: 64 landed 41/23 in a bench run, and the busier worker did 63 % of the work for as long
as they lived. A pool of a handful of connections (a service's HTTP client) can sit on one worker
for good. What nginx and Envoy leave to the hash, this corrects: each worker, when it publishes its
connection count (``probe``, ten times a second), reads every serving worker's from the shared
segment and, past its fair share, lets the surplus go. A client that honours ``Connection: close``
(every HTTP/1.1 client) reconnects at once; only connections that send a data request are let go,
after its answer, so no request is refused or cut.

Owns: the rule (``surplus``) and telling the gateway how many to let go (``GatewayDrain.shed``).
Must not touch: listeners, accepting, the answers themselves.
"""
from __future__ import annotations

MIN_CONNECTIONS = 8     # on fewer open connections in all, the hash is left alone: too few to even out
TOLERANCE = 1           # connections a worker may hold past its fair share before any is let go
MAX_SHARE = 4           # at most a quarter of a worker's connections go in one round (the rest next round)


def surplus(mine: int, counts: list[int]) -> int:
    """How many of this worker's ``mine`` open connections to let go, given every serving worker's
    count (``counts``, this one's included): those past the fair share (the total over the workers,
    rounded up) and ``TOLERANCE``, at most a ``MAX_SHARE``-th of ``mine`` (at least one) a round.
    The ones let go reconnect and land anywhere, so each round moves about half of them: a few
    rounds even out any split without moving more connections than the imbalance."""
    workers, total = len(counts), sum(counts)
    if workers < 2 or total < MIN_CONNECTIONS:
        return 0
    fair = -(-total // workers)
    over = mine - fair - TOLERANCE
    if over <= 0:
        return 0
    return min(over, max(1, mine // MAX_SHARE))


class ConnectionBalance:
    """One worker's side of the rule: ``check(mine)`` each time its count is published. A surplus is
    acted on when two checks in a row saw one (the smaller of the two goes): the other workers'
    counts are up to a publish old, and a burst of new connections makes a split that the next
    count no longer shows; acting on it made two workers hand connections to each other."""

    __slots__ = ("_metrics", "_drain", "_asked", "_seen")

    def __init__(self, metrics, drain):
        """``metrics``: the segment's ``Metrics`` (every worker's published count); ``drain``: the
        gateway's ``GatewayDrain``, which lets the connections go."""
        self._metrics = metrics
        self._drain = drain
        self._asked = 0
        self._seen = 0      # the surplus the last check saw

    def check(self, mine: int) -> int:
        """This worker holds ``mine`` open connections: the drain is told how many to let go now (none
        while it drains: then every one goes). Returns how many went since the last check."""
        drain = self._drain
        let_go = self._asked - drain.shed_left
        seen = 0 if drain.active else surplus(mine, self._metrics.serving_worker_connections())
        self._asked = min(seen, self._seen)
        self._seen = seen
        drain.shed(self._asked)
        return let_go
