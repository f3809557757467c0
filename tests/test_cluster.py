"""Two gateway hosts on one real Redis (``[cluster]``): limits and budgets shared, and what happens
when Redis goes away and comes back.

Each "host" is its own ``fastinfer serve`` (its own shared segment) with its own node id; the
Redis is a real ``redis-server`` (``tests/redis_server.py``). Counts are asserted exactly where
the mode promises exactness (strict), and within the bound the mode promises elsewhere
(approximate: the traffic of a sync interval or two), with the overshoot measured and printed.
"""
from __future__ import annotations

import re
import threading
import time

import pytest

from promtext import parse
from procs import http_json, in_parallel, start_gateway_proc, wait_for
from replicas import NAMES, chat as replica_chat, replicas, replicas_config, three_replicas
from test_gateway_keys import keys_config
from test_budgets import spend_usd
from test_rate_limits import scrape

import tomllib

from fastinfer.config import ConfigError, parse_config
from fastinfer.routing.sticky import session_key

__all__ = ["replicas", "three_replicas"]   # the fixtures, imported for pytest to find

KEY = "sk-cluster-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WIDE_KEY = "sk-cluster-wide-key"        # a second key: a full bucket of 120 for the overshoot
SYNC_MS = 50
# the mock counts 5 prompt words and answers 20 tokens: 25 tokens at $10,000 per million = $0.25
PRICE = "{ input_per_mtok = 10000.0, output_per_mtok = 10000.0 }"


def cluster_config(upstream_base: str, redis_url: str, node: str, *, mode: str = "approximate",
                   on_redis_down: str = "local_share", key: str = "rpm = 30", **deployment) -> str:
    return keys_config(upstream_base, f"""
        [[keys]]
        name = "team"
        key = "{KEY}"
        {key}

        [[keys]]
        name = "wide"
        key = "{WIDE_KEY}"
        rpm = 120

        [cluster]
        redis_url = "{redis_url}"
        node_id = "{node}"
        sync_interval_ms = {SYNC_MS}
        mode = "{mode}"
        on_redis_down = "{on_redis_down}"
    """, **deployment)


@pytest.fixture
def start_hosts(workdir):
    """Start N gateway hosts, each from its own directory, stopped at teardown."""
    started = []

    def start(configs: list[str], workers: int = 2):
        for i, text in enumerate(configs):
            d = workdir / f"host{i}"
            d.mkdir(exist_ok=True)
            started.append(start_gateway_proc(d, text, workers))
        return started[-len(configs):]

    yield start
    for proc in started:
        proc.kill()


def chat(gw, timeout: float = 30, key: str = KEY):
    return http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "a b c d e"}]},
                     headers={"connection": "close", "Authorization": f"Bearer {key}"}, timeout=timeout)


def gauge(gw, name: str) -> float | None:
    """A series' value (``name`` with its labels as written), read off a scrape that parses as
    Prometheus reads it (every family with its HELP and TYPE)."""
    text = scrape(gw)
    parse(text)
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def remaining(gw) -> float:
    return gauge(gw, 'fastinfer_ratelimit_remaining{scope="key",name="team",kind="requests"}')


def joined(hosts, n: int) -> bool:
    return all(gauge(h, "fastinfer_cluster_redis_up") == 1 and gauge(h, "fastinfer_cluster_nodes") == n
               for h in hosts)


@pytest.mark.parametrize("bad, path", [
    ('redis_url = "http://127.0.0.1:6379"', "cluster.redis_url"),
    ('redis_url = "redis://127.0.0.1:6379/zero"', "cluster.redis_url"),
    ('redis_url = "redis://:6379/0"', "cluster.redis_url"),
    ('redis_url = "redis://h:1/0"\nnode_id = "gw 1"', "cluster.node_id"),
    ('redis_url = "redis://h:1/0"\nmode = "exact"', "cluster.mode"),
    ('redis_url = "redis://h:1/0"\non_redis_down = "ignore"', "cluster.on_redis_down"),
    ('redis_url = "redis://h:1/0"\nsync_interval_ms = 0', "cluster.sync_interval_ms"),
])
def test_an_invalid_cluster_table_is_refused_naming_the_key(bad, path):
    text = f'[cluster]\n{bad}\n[[deployments]]\nname = "m"\nprovider = "mock"\n'
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(text))
    assert any(p.startswith(path) for p in e.value.problems), e.value.problems


def test_rate_limit_strict_needs_a_strict_cluster():
    text = '[[deployments]]\nname = "m"\nprovider = "mock"\nrate_limit = { rpm = 5, strict = true }\n'
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(text))
    assert e.value.problems[0].startswith("deployments[0].rate_limit.strict")
    parse_config(tomllib.loads('[cluster]\nredis_url = "redis://h:1/0"\nmode = "strict"\n' + text))


def test_approximate_hosts_spend_one_limit_and_the_overshoot_is_bounded(start_hosts, mock_upstream, redis_server):
    a, b = start_hosts([cluster_config(mock_upstream.base, redis_server.url, node) for node in ("gw-a", "gw-b")])
    assert wait_for(lambda: joined((a, b), 2), timeout=15)
    # host a spends the key's whole bucket of 30; host b learns it within a few sync intervals
    statuses = [chat(a)[0] for _ in range(30)]
    assert statuses.count(200) == 30
    assert wait_for(lambda: abs(remaining(b) - remaining(a)) <= 1, timeout=5), (remaining(a), remaining(b))
    left = remaining(b)                                 # what refilled while a spent (0.5 a second)
    assert left < 5
    statuses = [chat(b)[0] for _ in range(int(left) + 3)]
    assert statuses.count(200) <= int(left) + 1 and statuses[-1] == 429
    # both hosts at full speed on a full bucket of 120: what they admit beyond it and its refill is
    # the overshoot, bounded by what the hosts admit in the time an exchange takes to be seen
    counts = {a.base: [0, 0], b.base: [0, 0]}
    stop = time.monotonic() + 2.0

    def hammer(gw):
        while time.monotonic() < stop:
            status = chat(gw, key=WIDE_KEY)[0]
            counts[gw.base][status == 200] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(gw,)) for gw in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - started
    admitted = sum(c[1] for c in counts.values())
    sent = sum(c[0] + c[1] for c in counts.values())
    allowed = 120 + elapsed * 120 / 60
    overshoot = admitted - allowed
    per_interval = sent / elapsed * SYNC_MS / 1000
    print(f"approximate: {sent} sent in {elapsed:.2f}s, {admitted} admitted, limit {allowed:.1f}, "
          f"overshoot {overshoot:.1f} (traffic of one sync interval: {per_interval:.1f})")
    assert admitted >= int(allowed)               # the bucket and its refill are used
    assert overshoot <= 2 + 2 * per_interval


def test_strict_hosts_admit_exactly_the_limit(start_hosts, mock_upstream, redis_server):
    a, b = start_hosts([cluster_config(mock_upstream.base, redis_server.url, node, mode="strict", key="rpm = 20")
                        for node in ("gw-a", "gw-b")])
    assert wait_for(lambda: joined((a, b), 2), timeout=15)
    started = time.monotonic()
    answers = in_parallel(60, lambda i: chat((a, b)[i % 2]))
    elapsed = time.monotonic() - started
    ok = [status for status, _, _ in answers if status == 200]
    assert {status for status, _, _ in answers} <= {200, 429}
    assert 20 <= len(ok) <= 20 + int(elapsed * 20 / 60)
    assert mock_upstream.stats()["requests"] == len(ok)
    # and the mirror the headers read follows Redis on the other host too
    assert wait_for(lambda: remaining(a) < 3 and remaining(b) < 3, timeout=5)


def test_budgets_are_shared_by_the_hosts(start_hosts, mock_upstream, redis_server):
    mock_upstream.control(tokens=20)
    key = 'budget = { usd = 0.6, period = "day" }'
    a, b = start_hosts([cluster_config(mock_upstream.base, redis_server.url, node, key=key, price=PRICE)
                        for node in ("gw-a", "gw-b")], workers=1)
    assert wait_for(lambda: joined((a, b), 2), timeout=15)
    assert [chat(a)[0] for _ in range(3)] == [200, 200, 200]        # $0.75 spent on host a
    assert wait_for(lambda: spend_usd(b) == 0.75, timeout=5)         # host b learns it from Redis
    status, _, body = chat(b)
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert mock_upstream.stats()["requests"] == 3


def test_redis_killed_and_restarted_mid_traffic(start_hosts, mock_upstream, redis_server):
    a, b = start_hosts([cluster_config(mock_upstream.base, redis_server.url, node, key="rpm = 100000")
                        for node in ("gw-a", "gw-b")], workers=1)
    assert wait_for(lambda: joined((a, b), 2), timeout=15)
    statuses: list[int] = []
    done = threading.Event()

    def traffic():
        while not done.is_set():
            statuses.append(chat((a, b)[len(statuses) % 2])[0])

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for(lambda: len(statuses) > 20)
        redis_server.kill()
        assert wait_for(lambda: all(gauge(h, "fastinfer_cluster_redis_up") == 0 for h in (a, b)), timeout=10)
        during = len(statuses)
        # local_share: each host holds at most half the bucket while Redis is away (plus what it
        # refills between two of the sync's ticks; half a second of it is plenty)
        assert wait_for(lambda: all(remaining(h) <= 100000 / 2 + 100000 / 60 / 2 for h in (a, b)), timeout=5)
        assert wait_for(lambda: len(statuses) > during + 20, timeout=10)   # requests keep flowing
        redis_server.start()                                               # empty: nothing persisted
        assert wait_for(lambda: joined((a, b), 2), timeout=15)
        # resynchronised: both nodes' counters are back in the empty Redis
        assert wait_for(lambda: redis_server.command(
            "HLEN", "fastinfer:usage:key:team:requests") == ":2", timeout=5)
        after = len(statuses)
        assert wait_for(lambda: len(statuses) > after + 20, timeout=10)
    finally:
        done.set()
        thread.join(30)
    assert set(statuses) == {200}
    for host in (a, b):
        log = host.stderr_when_stopped()
        assert len(re.findall(r"cluster: Redis at .* is unreachable", log)) == 1, log
        assert len(re.findall(r"cluster: Redis at .* is back", log)) == 1, log


def test_two_hosts_send_every_session_to_one_replica(start_hosts, replicas, redis_server):
    """Sticky sessions through the shared directory: 8 sessions, each first seen by one host or the
    other, then alternating between them; each is served by one replica on both hosts, and its
    binding is one Redis key with the idle TTL."""
    ttl_s = 300
    a, b = start_hosts([replicas_config(replicas, "sticky", deployment=f"session = {{ affinity_ttl_s = {ttl_s} }}")
                        + f"""
        [cluster]
        redis_url = "{redis_server.url}"
        node_id = "{node}"
        sync_interval_ms = {SYNC_MS}
    """ for node in ("host-a", "host-b")])
    sessions = [f"conversation-{i}" for i in range(8)]
    answered: dict[str, set] = {s: set() for s in sessions}
    for turn in range(4):
        for i, session in enumerate(sessions):
            # the host a session starts on alternates too: neither host binds every session first
            host = (a, b)[(i + turn) % 2]
            status, replica, _ = replica_chat(host.base, f"{session} turn {turn}", session=session)
            assert status == 200, (session, turn, replica)
            answered[session].add(replica)
    # what the replicas themselves received: each session's every turn on one of them
    seen: dict[str, set] = {s: set() for s in sessions}
    for name, mock in zip(NAMES, replicas):
        for entry in mock.received():
            if entry["path"].endswith("/chat/completions"):
                seen[entry["body"]["messages"][0]["content"].split()[0]].add(name)
    for session in sessions:
        assert len(seen[session]) == 1 and seen[session] == answered[session], (session, seen, answered)
    assert len({next(iter(r)) for r in seen.values()}) > 1          # bound least loaded: they spread
    for session in sessions:
        name = f"fastinfer:session:{session_key('', 'm', session).hex()}"
        assert redis_server.command("GET", name) == next(iter(seen[session]))
        assert 0 < int(redis_server.command("PTTL", name)[1:]) <= ttl_s * 1000

