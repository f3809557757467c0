"""The host's view of the cluster, kept in control words of the shared segment.

Owns: whether Redis is up (``fastinfer_cluster_redis_up``), how many nodes were
live when it was last seen (``fastinfer_cluster_nodes``), this host's epoch
(changes when the segment is new, so other hosts know its counters restarted),
and how much of each bucket's and key's consumption was applied *from other
hosts* (so what this host itself consumed is ``consumed - applied``). Host-wide
words, not per worker: the lease that runs the sync may move to another worker
and the request path of every worker reads the state.

Must not touch: Redis (``sync``), the request path's decisions (``store``).
"""
from __future__ import annotations

import secrets

UNKNOWN, UP, DOWN = 0, 1, 2
_KINDS = ("requests", "tokens")


def cluster_words(config) -> list[tuple[str, tuple]]:
    """The control words a ``[cluster]`` config needs (``metrics.MetricsLayout`` allocates them)."""
    words = [("_cluster_state", ()), ("_cluster_nodes", ()), ("_cluster_epoch", ())]
    names = [("key", k.name, kind) for k in config.keys for kind in _KINDS]
    names += [("deployment", d.name, kind) for d in config.deployments for kind in _KINDS]
    words += [("_cluster_applied", name) for name in names]
    words += [(word, (k.name,)) for k in config.keys for word in ("_cluster_spend_applied", "_cluster_spend_period")]
    return words


def render_cluster(counters, index: dict, out: list[str]) -> None:
    """The cluster's gauges, when the config has a ``[cluster]``."""
    state = index.get(("_cluster_state", ()))
    if state is None:
        return
    out.append("# TYPE fastinfer_cluster_redis_up gauge")
    out.append(f"fastinfer_cluster_redis_up {1 if counters.get(state) == UP else 0}")
    out.append("# TYPE fastinfer_cluster_nodes gauge")
    out.append(f"fastinfer_cluster_nodes {counters.get(index[('_cluster_nodes', ())])}")


class ClusterState:
    """Read and written by the sync's lease holder; ``state`` is read by every worker."""

    def __init__(self, counters, index: dict):
        self.counters = counters
        self.state_word = index[("_cluster_state", ())]
        self._nodes = index[("_cluster_nodes", ())]
        self._epoch = index[("_cluster_epoch", ())]
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
    def epoch(self) -> int:
        """This segment's incarnation: made once, by the first holder of the sync lease."""
        epoch = self.counters.get(self._epoch)
        if epoch == 0:
            epoch = secrets.randbits(62) | 1
            self.counters.set(self._epoch, epoch)
        return epoch

    def applied(self, name: tuple[str, str, str]) -> int:
        return self.counters.get(self._index[("_cluster_applied", name)])

    def add_applied(self, name: tuple[str, str, str], n: int) -> None:
        self.counters.add(self._index[("_cluster_applied", name)], n)

    def spend_applied(self, key: str, period: int) -> int:
        """micro-USD of other hosts' spend already added to ``key``'s local spend in ``period``."""
        if self.counters.get(self._index[("_cluster_spend_period", (key,))]) != period:
            return 0
        return self.counters.get(self._index[("_cluster_spend_applied", (key,))])

    def set_spend_applied(self, key: str, period: int, micro: int) -> None:
        self.counters.set(self._index[("_cluster_spend_period", (key,))], period)
        self.counters.set(self._index[("_cluster_spend_applied", (key,))], micro)
