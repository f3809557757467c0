"""The host's view of the cluster, kept in control words of the shared segment.

Owns: whether Redis is up (``fastinfer_cluster_redis_up``), how many nodes were
live when it was last seen (``fastinfer_cluster_nodes``), this host's epoch
(made with a new segment, so other hosts know its counters restarted; a reload
carries it, with the buckets' use counters: ``carry_epoch``), and how much of
each key's spend was applied *from other hosts*. What other hosts used of a
bucket is kept by the bucket itself (``remote``, apart from this host's own
``consumed``: ``limits.store``'s remote seam), not here. Host-wide
words, not per worker: the lease that runs the sync may move to another worker
and the request path of every worker reads the state.

Must not touch: Redis (``sync``), the request path's decisions (``store``).
"""
from __future__ import annotations


UNKNOWN, UP, DOWN = 0, 1, 2
_EPOCH = ("_cluster_epoch", ())


def cluster_words(config) -> list[tuple[str, tuple]]:
    """The control words a ``[cluster]`` config needs (``metrics.MetricsLayout`` allocates them)."""
    words = [("_cluster_state", ()), ("_cluster_nodes", ()), _EPOCH]
    words += [(word, (k.name,)) for k in config.keys for word in ("_cluster_spend_applied", "_cluster_spend_period")]
    return words


def carry_epoch(old_counters, old_index: dict, new_counters, new_index: dict) -> None:
    """A reload's new segment goes on with the old one's epoch (at the roll): the buckets' use
    counters are carried too, so this node's per-node counters did not restart."""
    if _EPOCH in old_index and _EPOCH in new_index:
        epoch = old_counters.get(old_index[_EPOCH])
        if epoch:
            new_counters.set(new_index[_EPOCH], epoch)


def cluster_gauges(counters, index: dict) -> dict[str, int]:
    """The cluster's gauges by family name (none when the config has no ``[cluster]``): the metrics
    registry renders them."""
    state = index.get(("_cluster_state", ()))
    if state is None:
        return {}
    return {"fastinfer_cluster_redis_up": 1 if counters.get(state) == UP else 0,
            "fastinfer_cluster_nodes": counters.get(index[("_cluster_nodes", ())])}


class ClusterState:
    """Read and written by the sync's lease holder; ``state`` is read by every worker."""

    def __init__(self, counters, index: dict):
        self.counters = counters
        self.state_word = index[("_cluster_state", ())]
        self._nodes = index[("_cluster_nodes", ())]
        self._epoch = index[_EPOCH]
        self._index = index

    @property
    def state(self) -> int:
        return self.counters.get(self.state_word)

    def set_state(self, state: int) -> None:
        self.counters.set(self.state_word, state)

    @property
    def nodes(self) -> int:
        """Live nodes when Redis was last seen (at least this one)."""
        return max(1, self.counters.get(self._nodes))

    def set_nodes(self, n: int) -> None:
        self.counters.set(self._nodes, n)

    @property
    def fresh(self) -> bool:
        """No epoch yet: this segment is new and carries nothing from a previous one (a reload
        carries the epoch), so it has forgotten what this node used before it started."""
        return self.counters.get(self._epoch) == 0

    @property
    def epoch(self) -> int:
        """This segment's incarnation: made once, by the first holder of the sync lease."""
        epoch = self.counters.get(self._epoch)
        if epoch == 0:
            import secrets      # here: the supervisor (metrics) imports this module, and secrets brings hashlib
            epoch = secrets.randbits(62) | 1
            self.counters.set(self._epoch, epoch)
        return epoch

    def spend_applied(self, key: str, period: int) -> int:
        """micro-USD of other hosts' spend already added to ``key``'s local spend in ``period``."""
        if self.counters.get(self._index[("_cluster_spend_period", (key,))]) != period:
            return 0
        return self.counters.get(self._index[("_cluster_spend_applied", (key,))])

    def set_spend_applied(self, key: str, period: int, micro: int) -> None:
        self.counters.set(self._index[("_cluster_spend_period", (key,))], period)
        self.counters.set(self._index[("_cluster_spend_applied", (key,))], micro)
