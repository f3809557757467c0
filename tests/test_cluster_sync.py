"""The cluster's exchange, host by host, in one process: two "hosts" are two segments (the
pure-Python reference, clocks standing still) with their own node ids, on one real
``redis-server``; each exchange is one ``ClusterSync.tick`` called by the test, so every count
is exact. What the processes' test (``test_cluster.py``) shows with traffic, this shows step by
step: a node that restarts, a Redis that restarts empty, spend taken back after a restart, and
what each ``on_redis_down`` does.
"""
from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from fastinfer._core.ref.shm import Segment
from fastinfer.cluster.attach import attach_cluster, session_directory
from fastinfer.cluster.state import DOWN, UP
from fastinfer.cluster.store import ClusterUnavailable
from fastinfer.config import parse_config
from fastinfer.metrics import MetricsLayout
from fastinfer.process.hostwide import HostState, plan

BUCKET = ("key", "k", "requests")


def host_config(url: str, node: str, **cluster) -> dict:
    return parse_config({
        "keys": [{"name": "k", "key": "sk-k", "rpm": 100, "budget": {"usd": 10.0, "period": "total"}}],
        "cluster": {"redis_url": url, "node_id": node, **cluster},
        "deployments": [{"name": "d", "provider": "mock"}]})


class Host:
    """One host's segment, store and sync (worker 0), made as a worker makes them."""

    def __init__(self, config):
        layout = MetricsLayout(config)
        shape, index = plan(config, 1, layout)
        self.segment = Segment.create(f"cluster-{uuid.uuid4().hex}", shape)
        self.segment.set_test_clock(10**12)           # no refill: every level below is exact
        self.index = index
        self.store, self.sync = attach_cluster(config, SimpleNamespace(segment=self.segment, index=index,
                                                                       metrics_layout=layout), 0)
        self.bucket = self.store.buckets[index.buckets[BUCKET]]

    def level(self) -> float:
        return self.bucket.available()

    def take(self, n: int) -> None:
        assert self.store.take([self.index.buckets[BUCKET]], [n]) == (True, 0.0)


@pytest.fixture
def hosts(redis_server):
    made = []

    def make(node: str, **cluster) -> Host:
        made.append(Host(host_config(redis_server.url, node, **cluster)))
        return made[-1]

    yield make
    for h in made:                 # (Redis clients are closed by each test, inside its event loop)
        h.segment.unlink()
        h.segment.close()


def test_each_host_charges_what_the_others_consumed_through_restarts_of_a_node_and_of_redis(hosts, redis_server):
    async def run():
        a, b = hosts("a"), hosts("b")
        for h in (a, b):
            await h.sync.tick(0.0)                    # both seen once: the baseline
        assert a.sync.state.state == UP
        a.take(10)
        await a.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert b.level() == 90 and a.level() == 90   # b charged a's 10; a charged nothing of its own
        b.take(5)
        await b.sync.tick(0.0)
        await a.sync.tick(0.0)
        assert a.level() == 85 and b.level() == 85
        # a restarts: a new segment, a new epoch, its counter starts from 0 again
        a2 = hosts("a")
        a2.take(3)
        await a2.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert b.level() == 82
        # Redis restarts empty: every node publishes its totals again, nothing is counted twice
        assert redis_server.command("FLUSHALL") == "+OK"
        await b.sync.tick(0.0)
        a2.take(2)
        await a2.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert b.level() == 80
        assert redis_server.command("HLEN", "fastinfer:usage:key:k:requests") == ":2"
        for h in (a, a2, b):
            await h.sync.client.aclose()
    asyncio.run(run())


def test_spend_is_shared_and_a_restarted_node_takes_its_own_back(hosts, redis_server):
    async def run():
        a, b = hosts("a"), hosts("b")
        a.store.add_spend(0, 0, 2_500_000)            # $2.50 on a ("total": period 0)
        await a.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert b.store.spent(0, 0) == 2_500_000
        b.store.add_spend(0, 0, 1_000_000)
        await b.sync.tick(0.0)
        await a.sync.tick(0.0)
        assert a.store.spent(0, 0) == 3_500_000
        a2 = hosts("a")                               # a restarts with nothing in memory
        await a2.sync.tick(0.0)
        assert a2.store.spent(0, 0) == 3_500_000      # its own $2.50 from Redis, and b's $1
        # a restarts again, its state_dir (or a reload) carrying the total, b's $1 included
        a3 = hosts("a")
        a3.store.restore_spend(0, 0, 3_500_000)
        await a3.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert a3.store.spent(0, 0) == 3_500_000 and b.store.spent(0, 0) == 3_500_000   # nothing twice
        assert redis_server.command("HGET", "fastinfer:spend:k:total:0", "a") == "2500000"
        for h in (a, a2, a3, b):
            await h.sync.client.aclose()
    asyncio.run(run())


def test_redis_down_local_share_holds_each_host_to_its_share(hosts, redis_server):
    async def run():
        a, b = hosts("a"), hosts("b")
        for _ in range(3):     # a node learns the members at one exchange, checks their heartbeats at the next
            for h in (a, b):
                await h.sync.tick(0.0)
        assert a.sync.state.nodes == 2
        a.take(20)
        await a.sync.tick(0.0)
        redis_server.kill()
        await a.sync.tick(1.2)
        assert a.sync.state.state == DOWN
        # what was left (80) / 2 live nodes; then the other node's half of 1.2 s of refill (100/min)
        assert a.level() == pytest.approx(40 - 1.0, abs=0.51)
        redis_server.start()
        await a.sync.tick(0.0)
        assert a.sync.state.state == UP and a.level() == 80   # the assumptions are given back
        for h in (a, b):
            await h.sync.client.aclose()
    asyncio.run(run())


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed", "local_share"])
def test_what_a_request_gets_from_a_host_without_redis(policy):
    config = host_config("redis://127.0.0.1:1/0", "a", on_redis_down=policy)
    host = Host(config)
    try:
        host.take(100)                                # the whole bucket, before Redis is known down
        host.sync.state.set_state(DOWN)
        ids = [host.index.buckets[BUCKET]]
        if policy == "fail_closed":
            with pytest.raises(ClusterUnavailable) as e:
                host.store.take(ids, [1])
            assert e.value.status == 503
        elif policy == "fail_open":
            assert host.store.take(ids, [1]) == (True, 0.0)
        else:
            ok, wait = host.store.take(ids, [1])
            assert not ok and wait > 0
    finally:
        host.segment.unlink()
        host.segment.close()


def test_two_hosts_agree_on_every_sessions_replica_through_the_directory(hosts, redis_server):
    async def run():
        a, b = hosts("a"), hosts("b")
        da, db = session_directory(a.sync), session_directory(b.sync)
        sessions = [uuid.uuid4().bytes for _ in range(8)]
        replicas = ["r0", "r1", "r2"]
        for i, key in enumerate(sessions):       # a binds first; b proposes another replica and is told a's
            assert await da.claim(key, "d", replicas[i % 3], 30) == replicas[i % 3]
            assert await db.claim(key, "d", replicas[(i + 1) % 3], 30) == replicas[i % 3]
        # a re-pins session 0; b follows it
        da.moved(sessions[0], "d", "r2", 30)
        # session 1 is used again with a longer idle TTL (batched refresh)
        da.touched(sessions[1], 600)
        # session 2 ends on b; a later claim binds it afresh
        db.ended(sessions[2])
        await da.close()
        await db.close()
        assert await db.claim(sessions[0], "d", "r0", 30) == "r2"
        pttl = int(redis_server.command("PTTL", f"fastinfer:session:{sessions[1].hex()}")[1:])
        assert 30_000 < pttl <= 600_000
        assert await da.claim(sessions[2], "d", "r1", 30) == "r1"
        # Redis away: a binds on its own at once, and nothing is sent
        redis_server.kill()
        await a.sync.tick(0.0)
        assert await da.claim(uuid.uuid4().bytes, "d", "r1", 30) == "r1"
        da.touched(sessions[3], 30)
        await da.close()
        for h in (a, b):
            await h.sync.client.aclose()
    asyncio.run(run())


def test_a_closed_directory_sends_nothing_and_its_bindings_expire_in_redis(hosts, redis_server):
    """A draining worker closes its directory before the sync closes the Redis pool: what it queued
    goes out, what comes later is dropped (no command on a closing pool), the binding stays."""
    async def run():
        a = hosts("a")
        directory = session_directory(a.sync)
        key = uuid.uuid4().bytes
        name = f"fastinfer:session:{key.hex()}"
        assert await directory.claim(key, "d", "r1", 30) == "r1"
        directory.touched(key, 600)            # queued: sent by close
        await directory.close()
        assert 30_000 < int(redis_server.command("PTTL", name)[1:]) <= 600_000
        directory.ended(key)
        directory.moved(key, "d", "r2", 30)
        await asyncio.sleep(0.05)
        assert redis_server.command("GET", name) == "r1"
        await a.sync.client.aclose()
    asyncio.run(run())


def test_strict_takes_in_redis_survives_a_script_flush_and_a_redis_restarted_empty(hosts, redis_server):
    async def run():
        a, b = hosts("a", mode="strict"), hosts("b", mode="strict")
        bucket = [a.index.buckets[BUCKET]]
        assert await a.store.take_async(bucket, [60]) == (True, 0.0)
        ok, wait = await b.store.take_async(bucket, [60])      # the same bucket, in Redis: 40 left
        assert not ok and 0 < wait <= 20 / (100 / 60) + 1       # 20 tokens short, at 100 a minute
        assert redis_server.command("SCRIPT", "FLUSH") == "+OK"  # EVALSHA answers NOSCRIPT: loaded again
        assert await b.store.take_async(bucket, [30]) == (True, 0.0)
        await b.sync.tick(0.0)                       # b's mirror follows Redis (10 left, plus refill)
        assert 9 <= b.level() < 13
        assert redis_server.command("FLUSHALL") == "+OK"          # Redis restarted empty
        await b.sync.tick(0.0)                       # seeds the lost bucket from b's mirror
        assert not (await a.store.take_async(bucket, [20]))[0]    # not a fresh bucket of 100
        for h in (a, b):
            await h.sync.client.aclose()
    asyncio.run(run())


def test_a_frozen_redis_counts_as_down_and_nothing_waits_for_it(hosts, redis_server):
    async def run():
        a = hosts("a", timeout_ms=100)
        await a.sync.tick(0.0)
        assert a.sync.state.state == UP
        redis_server.freeze()
        try:
            await a.sync.tick(0.0)                   # times out (100 ms per call) instead of hanging
            assert a.sync.state.state == DOWN
            a.take(1)                                # the request path never asks Redis here
        finally:
            redis_server.freeze(False)
        await a.sync.tick(0.0)
        assert a.sync.state.state == UP
        await a.sync.client.aclose()
    asyncio.run(run())


def published(redis_server, node: str) -> tuple[str, int]:
    """(epoch, own use) that ``node`` last published for BUCKET."""
    epoch, _, own = redis_server.command("HGET", "fastinfer:usage:" + ":".join(BUCKET), node).partition(":")
    return epoch, int(own)


def test_other_hosts_use_goes_through_the_remote_seam_and_is_never_published_as_own(hosts, redis_server):
    """Net deltas both ways (a token correction lowers a node's counter) and the local share's
    assumptions are remote use: they move the level, never ``consumed``, never the published field."""
    async def run():
        a, b = hosts("a"), hosts("b")
        for _ in range(3):
            for h in (a, b):
                await h.sync.tick(0.0)
        a.take(10)
        await a.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert b.level() == 90 and (b.bucket.consumed, b.bucket.remote) == (0, 10)
        a.store.adjust(a.index.buckets[BUCKET], -4)       # a's request used less than it took
        await a.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert a.level() == 94 and b.level() == 94 and (b.bucket.consumed, b.bucket.remote) == (0, 6)
        assert published(redis_server, "a")[1] == 6 and published(redis_server, "b")[1] == 0
        b.take(2)
        redis_server.kill()
        await b.sync.tick(1.2)                            # local share: 1/2 of what is left, as remote
        assert b.level() < 46 and b.bucket.consumed == 2 and b.bucket.remote > 6
        redis_server.start()
        await b.sync.tick(0.0)
        assert b.level() == 92 and (b.bucket.consumed, b.bucket.remote) == (2, 6)   # assumptions given back
        assert published(redis_server, "b")[1] == 2
        await a.sync.tick(0.0)             # a's pooled connection died with Redis: sent again on a new one
        assert a.level() == 92 and (a.bucket.consumed, a.bucket.remote) == (6, 2)
        for h in (a, b):
            await h.sync.client.aclose()
    asyncio.run(run())


def test_a_node_that_restarts_keeps_its_bucket_level_through_redis(hosts, redis_server):
    """Approximate mode: a node restarted with an empty segment (no state_dir) lowers its buckets to
    the lowest level any node recorded, its own record from before the restart included, less what it
    used since; that lowering is remote use, so the other nodes do not count it again."""
    async def run():
        a = hosts("a")
        await a.sync.tick(0.0)
        a.take(60)
        await a.sync.tick(0.0)
        a_epoch = published(redis_server, "a")[0]
        a2 = hosts("a")                                   # alone in the cluster: only its own record
        a2.take(5)
        await a2.sync.tick(0.0)
        assert a2.level() == pytest.approx(35, abs=0.5)   # not a fresh 95: the 60 before the restart count
        assert a2.bucket.consumed == 5 and published(redis_server, "a") != (a_epoch, 5)
        assert published(redis_server, "a")[1] == 5
        b = hosts("b")                                    # joins: seeded from a2's record
        await b.sync.tick(0.0)
        assert b.level() == pytest.approx(35, abs=0.5) and b.bucket.consumed == 0
        a2.take(5)
        await a2.sync.tick(0.0)
        await b.sync.tick(0.0)
        assert b.level() == pytest.approx(30, abs=0.5)    # a2's counter after its first sight: +5 only
        a3 = hosts("a")                                   # restarts again: b's record and its own agree
        await a3.sync.tick(0.0)
        assert a3.level() == pytest.approx(30, abs=0.5)
        await b.sync.tick(0.0)
        assert b.level() == pytest.approx(30, abs=0.5)    # the seeding was not published as a3's use
        for h in (a, a2, a3, b):
            await h.sync.client.aclose()
    asyncio.run(run())


def test_a_reload_goes_on_with_the_nodes_counters_and_publishes_only_its_own_use(hosts, redis_server):
    """A reload's new segment carries the epoch and both use counters (the supervisor's two calls):
    what the old generation applied from other hosts, before and during its drain, stays remote, so
    the new generation publishes this host's own use under the same epoch and nobody counts twice."""
    config = host_config(redis_server.url, "a")

    async def run():
        old, b = HostState.create(config, 1), hosts("b")
        new = None
        try:
            store, sync = attach_cluster(config, old, 0)
            i = old.index.buckets[BUCKET]
            for _ in range(2):
                await sync.tick(0.0)
                await b.sync.tick(0.0)
            assert store.take([i], [10]) == (True, 0.0)
            b.take(7)
            await b.sync.tick(0.0)
            await sync.tick(0.0)
            epoch = published(redis_server, "a")[0]
            new = HostState.create(config, 1)
            carried = new.carry_state_from(old)            # the roll
            b.take(3)
            await b.sync.tick(0.0)
            await sync.tick(0.0)                           # the old generation, not yet draining, applies b's 3
            assert store.take([i], [2]) == (True, 0.0)     # ... and serves 2 more
            new_store, new_sync = attach_cluster(config, new, 0)
            await new_sync.tick(0.0)
            new.carry_state_from(old, since=carried)       # the old generation has drained
            await new_sync.tick(0.0)
            j = new.index.buckets[BUCKET]
            assert (new_store.buckets[j].consumed, new_store.buckets[j].remote) == (12, 10)
            assert published(redis_server, "a") == (epoch, 12)
            await b.sync.tick(0.0)
            assert b.level() == 100 - 10 - 7 - 3 - 2 and b.bucket.remote == 12
            for s in (sync, new_sync, b.sync):
                await s.client.aclose()
        finally:
            old.close()
            if new is not None:
                new.close()
    asyncio.run(run())


def test_a_strict_take_after_redis_restarted_is_served_not_refused(hosts, redis_server):
    """fail_closed refuses limited requests while Redis is away, not once it is back: the first take
    of a worker that asked nothing of Redis while it was away (its pooled connection died with the
    old Redis) goes out again on a new connection."""
    async def run():
        a = hosts("a", mode="strict", on_redis_down="fail_closed")
        bucket = [a.index.buckets[BUCKET]]
        await a.sync.tick(0.0)
        assert await a.store.take_async(bucket, [1]) == (True, 0.0)     # a connection in the pool
        redis_server.kill()
        redis_server.start()
        assert a.sync.state.state == UP
        assert (await a.store.take_async(bucket, [1]))[0]
        await a.sync.client.aclose()
    asyncio.run(run())
