"""A worker joins the cluster: its Redis client, its store, the host's sync, its session directory.

Owns: putting ``client``, ``state``, ``strict``, ``store`` and ``sync`` together
for one worker (``limits.Limits.for_worker`` calls it when the config has a
``[cluster]``). Must not touch: anything per request.
"""
from __future__ import annotations

from ..limits.persist import spend_periods
from .client import Keys, connect
from .sessions import RedisSessionDirectory
from .state import ClusterState
from .store import ClusterStore
from .strict import StrictBuckets
from .sync import ClusterSync


def attach_cluster(config, host, worker: int) -> tuple[ClusterStore, ClusterSync]:
    """This worker's ``LimitStore`` and its share of the host's sync (started by ``Limits.start``)."""
    cluster = config.cluster
    segment, index = host.segment, host.index
    state = ClusterState(segment.counters, host.metrics_layout.counter_index)
    client = connect(cluster)
    buckets = [segment.bucket(i) for i in index.buckets.values()]
    strict = None
    if index.buckets and cluster.mode == "strict":
        strict = StrictBuckets(client, Keys(cluster.key_prefix), list(index.buckets), buckets)
    store = ClusterStore(segment, len(index.buckets), len(index.keys), cluster, state, strict)
    sync = ClusterSync(cluster, client, state, store, segment=segment, worker=worker, buckets=index.buckets,
                       keys=index.keys, periods=spend_periods(config), strict=strict)
    return store, sync


def session_directory(sync: ClusterSync) -> RedisSessionDirectory:
    """This worker's shared session directory (routing's ``SessionDirectory`` seam), on the same
    Redis pool and host state as its limits."""
    return RedisSessionDirectory(sync.client, sync.redis_keys, sync.state)
