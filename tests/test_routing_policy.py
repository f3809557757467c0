"""The routing policies in one process, over a real shared segment (compiled and reference alike).

Prefix routing: block hashes that survive a conversation's next turn, affinity, spreading
new prefixes, yielding to overload, never an unhealthy or avoided replica. Sticky routing:
binding, re-pinning (avoided, unhealthy), the events each change of a binding raises,
eviction from a full table, namespaces, and the cluster seam (``SessionDirectory``).
"""
from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from fastinfer._core import shm
from fastinfer._core.constants import NO_REPLICA
from fastinfer._core.ref import shm as ref_shm
from fastinfer.config import parse_config
from fastinfer.metrics import MetricsLayout
from fastinfer.process.hostwide import plan
from fastinfer.routing import BLOCK_BYTES, DeploymentRouter, prompt_hashes, session_id_problem, session_key
from fastinfer.routing.prefix import BALANCE_ABS


def config(routing: str, max_sessions: int = 1024, ttl_s: float = 300):
    return parse_config({"server": {"max_sessions": max_sessions}, "deployments": [{
        "name": "m", "provider": "openai_compatible", "routing": routing,
        "session": {"affinity_ttl_s": ttl_s},
        "replicas": [{"base_url": f"http://127.0.0.1:{9000 + i}/v1"} for i in range(3)]}]})


@pytest.fixture(params=["compiled", "reference"])
def make_router(request):
    impl = shm if request.param == "compiled" else ref_shm
    made = []

    def make(routing: str, events=None, directory=None, **kw):
        cfg = config(routing, **kw)
        layout, _ = plan(cfg, 1, MetricsLayout(cfg))
        seg = impl.Segment.create(f"routing-test-{uuid.uuid4().hex[:10]}", layout)
        made.append(seg)
        return DeploymentRouter(seg, 0, 0, cfg.deployments[0], events=events, directory=directory), seg

    yield make
    for seg in made:
        seg.unlink()
        seg.close()


class Events:
    def __init__(self):
        self.repins, self.gone = [], []

    def repinned(self, previous):
        self.repins.append(previous)

    def released(self, info, evicted):
        self.gone.append((info, evicted))


def request(session: str | None = None, key: str | None = None, messages=None, **body):
    return SimpleNamespace(session_id=session, key=key,
                           body={"messages": messages or [{"role": "user", "content": "hi"}], **body})


def conversation(seed: int, turns: int) -> list[dict]:
    """An 8 KB system prompt (32 blocks), then ``turns`` exchanges of about 2 blocks each."""
    messages = [{"role": "system", "content": f"system prompt {seed} " + "lorem ipsum dolor " * 455}]
    for t in range(turns):
        messages += [{"role": "user", "content": f"question {t} " * 20},
                     {"role": "assistant", "content": f"answer {t} " * 30}]
    return messages


# ------------------------------------------------------------------ prompt blocks

def test_the_next_turn_keeps_every_whole_block_of_the_last():
    one = prompt_hashes({"messages": conversation(1, 1)})
    two = prompt_hashes({"messages": conversation(1, 2)})
    assert len(one) % 8 == 0 and len(one) // 8 >= 32
    assert two[:len(one)] == one and len(two) > len(one)
    other = prompt_hashes({"messages": conversation(2, 1)})
    assert other[:8] != one[:8]                              # a different system prompt: nothing shared
    # system prompt, tools and messages are all part of it, in that order
    assert prompt_hashes({"messages": conversation(1, 1), "tools": [{"type": "function"}]})[:8] != one[:8]
    assert prompt_hashes({"system": "x" * 300, "messages": []}) != prompt_hashes({"system": "y" * 300, "messages": []})
    assert prompt_hashes({"messages": [{"role": "user", "content": "short"}]}) == b""
    assert len(prompt_hashes({"prompt": "p" * (3 * BLOCK_BYTES)})) == 3 * 8   # /v1/completions


# ------------------------------------------------------------------ prefix routing

def finish_all(router, replicas):
    for r in replicas:
        router.finish(r)


def test_a_prefix_goes_back_to_its_replica_and_new_ones_spread(make_router):
    router, _ = make_router("prefix")
    firsts = []
    for seed in range(6):
        r = router.route(request(messages=conversation(seed, 1))).choose(0)
        firsts.append(r)
        router.finish(r)
    assert sorted(firsts) == [0, 0, 1, 1, 2, 2]                 # new prefixes: least loaded, rotating
    for seed in range(6):
        for turn in range(2, 5):
            r = router.route(request(messages=conversation(seed, turn))).choose(0)
            router.finish(r)
            assert r == firsts[seed], (seed, turn)


def test_affinity_holds_under_some_load_and_yields_to_overload(make_router):
    router, seg = make_router("prefix")
    home = router.route(request(messages=conversation(7, 1))).choose(0)
    router.finish(home)
    busy = [home] * 3
    for r in busy:
        router.start(r)
    assert router.route(request(messages=conversation(7, 2))).choose(0) == home   # 3 in flight: still home
    router.finish(home)
    more = [home] * (BALANCE_ABS + 1)
    for r in more:
        router.start(r)
    moved = router.route(request(messages=conversation(7, 3))).choose(0)
    assert moved != home                                           # overloaded: least loaded instead
    finish_all(router, busy + more + [moved])
    assert all(seg.replicas(0).in_flight(r) == 0 for r in range(3))


def test_a_prefix_never_goes_to_an_avoided_or_unhealthy_replica(make_router):
    router, seg = make_router("prefix")
    home = router.route(request(messages=conversation(3, 1))).choose(0)
    router.finish(home)
    r = router.route(request(messages=conversation(3, 2))).choose(1 << home)
    assert r != home
    router.finish(r)
    seg.replicas(0).set_healthy(home, False)
    r = router.route(request(messages=conversation(3, 2))).choose(0)
    assert r not in (home, NO_REPLICA)
    router.finish(r)
    assert router.route(request(messages=conversation(3, 2))).choose(0b111) == NO_REPLICA


# ------------------------------------------------------------------ sticky routing

def test_a_session_binds_once_and_stays(make_router):
    events = Events()
    router, seg = make_router("sticky", events=events)
    first = router.route(request("s1")).choose(0)
    router.finish(first)
    for _ in range(5):
        r = router.route(request("s1")).choose(0)
        router.finish(r)
        assert r == first
    others = set()
    for i in range(2, 4):
        r = router.route(request(f"s{i}")).choose(0)
        router.finish(r)
        others.add(r)
    assert first not in others and len(others) == 2             # each new session: least loaded, rotating
    assert seg.sessions.occupancy == 3 and events.repins == [] and events.gone == []
    assert router.route(request()).choose(0) in (0, 1, 2)       # no session id: least loaded


def test_a_session_is_repinned_off_an_avoided_or_unhealthy_replica_and_stays_there(make_router):
    events = Events()
    router, seg = make_router("sticky", events=events)
    first = router.route(request("s")).choose(0)
    router.finish(first)
    moved = router.route(request("s")).choose(1 << first)      # its circuit is open (the caller avoids it)
    router.finish(moved)
    assert moved != first
    assert [(p.replica, p.deployment) for p in events.repins] == [(first, 0)]
    assert router.route(request("s")).choose(0) == moved        # it stays where it was re-pinned
    router.finish(moved)
    seg.replicas(0).set_healthy(moved, False)
    third = router.route(request("s")).choose(0)
    router.finish(third)
    assert third not in (moved, NO_REPLICA) and len(events.repins) == 2
    assert all(seg.replicas(0).in_flight(r) == 0 for r in range(3))


def test_sessions_are_namespaced_by_gateway_key_and_deployment():
    assert session_key("team-a", "m", "chat") != session_key("team-b", "m", "chat")
    assert session_key("team-a", "m", "chat") != session_key("team-a", "n", "chat")
    assert session_key("a", "bc", "d") != session_key("ab", "c", "d")   # no two triples run together
    assert len(session_key("", "m", "x")) == 16


def test_two_keys_using_one_session_id_get_two_bindings(make_router):
    """The router reads the request's gateway key name: tenants' sessions never share a binding."""
    router, seg = make_router("sticky")
    a = router.route(request("chat", key="team-a")).choose(0)
    router.finish(a)
    b = router.route(request("chat", key="team-b")).choose(0)
    router.finish(b)
    assert a != b                                                # the second is a new session: least loaded
    assert seg.sessions.occupancy == 2
    assert seg.sessions.touch(session_key("team-a", "m", "chat")) == a
    assert seg.sessions.touch(session_key("team-b", "m", "chat")) == b
    assert seg.sessions.touch(session_key("", "m", "chat")) == -1    # no key: yet another namespace


def test_a_full_table_evicts_the_least_recently_used_binding_and_says_so(make_router):
    events = Events()
    router, seg = make_router("sticky", events=events, max_sessions=64)
    for i in range(seg.sessions.capacity + 40):
        r = router.route(request(f"s{i}")).choose(0)
        router.finish(r)
    assert seg.sessions.occupancy <= seg.sessions.capacity
    evicted = [info for info, was_evicted in events.gone if was_evicted]
    assert len(evicted) == seg.sessions.evictions > 0          # every eviction told, none refused


def test_an_expired_binding_is_released_when_the_session_comes_back(make_router):
    events = Events()
    router, seg = make_router("sticky", events=events, ttl_s=10)
    seg.set_test_clock(1_000_000_000)
    first = router.route(request("s")).choose(0)
    router.finish(first)
    seg.set_test_clock(1_000_000_000 + 11 * 10**9)             # idle past the TTL
    again = router.route(request("s")).choose(0)
    router.finish(again)
    ((info, evicted),) = events.gone
    assert info.key == session_key("", "m", "s") and info.expired and not evicted


def test_a_shared_directory_decides_where_an_unknown_session_binds(make_router):
    class Directory:
        shared = True

        def __init__(self):
            self.claims, self.moves, self.touches = [], [], []

        async def claim(self, key, deployment, replica, ttl_s):
            self.claims.append((deployment, replica))
            return "r2"                                         # another host bound it to r2 first

        def moved(self, key, deployment, replica, ttl_s):
            self.moves.append(replica)

        def touched(self, key, ttl_s):
            self.touches.append(key)

        def ended(self, key):
            pass

    directory = Directory()
    router, _ = make_router("sticky", directory=directory)
    route = router.route(request("s"))
    assert route.needs_claim
    asyncio.run(route.claim())
    assert route.choose(0) == 2 and directory.claims[0][0] == "m"
    router.finish(2)
    route = router.route(request("s"))
    assert not route.needs_claim and directory.touches         # bound here now: no claim, a touch
    assert route.choose(1 << 2) != 2 and directory.moves        # a re-pin is told to the cluster


@pytest.mark.parametrize("value, problem", [
    ("a" * 256, None), ("a" * 257, "is longer than 256 bytes"), ("é" * 128, None), ("é" * 129, "is longer"),
    ("a\tb", "contains control characters"), ("a\x7fb", "contains control"), ("a\x85b", "contains control"),
    ("ünïcödé-ok", None),
])
def test_what_a_session_id_may_be(value, problem):
    found = session_id_problem(value)
    assert (found is None) if problem is None else found.startswith(problem)


def _replicas(n: int) -> list[dict]:
    return [{"base_url": f"http://127.0.0.1:{9000 + i}/v1"} for i in range(n)]


@pytest.mark.parametrize("deployment, server, problem", [
    ({"replicas": _replicas(65)}, {}, "deployments[0].replicas: at most 64 replicas per deployment, got 65"),
    ({"session": {"backend_sessions": True}}, {}, 'deployments[0].session.backend_sessions: needs routing = "sticky"'),
    ({"provider": "mock", "routing": "sticky", "session": {"backend_sessions": True}}, {},
     "deployments[0].session.backend_sessions: needs replicas on the network, not mock"),
    ({"provider": "mock", "health_check": {}}, {}, "deployments[0].health_check: needs replicas on the network"),
    ({"health_check": {"path": "health"}}, {}, "deployments[0].health_check.path: a path starting with /"),
    ({"health_check": {"interval_s": 0}}, {}, "deployments[0].health_check.interval_s: must be >= 0.05"),
    ({"session": {"capacity": 0}}, {}, "deployments[0].session.capacity: must be >= 1"),
    ({}, {"max_sessions": 0}, "server.max_sessions: must be >= 1"),
])
def test_routing_settings_that_cannot_work_are_refused(deployment, server, problem):
    from fastinfer.config import ConfigError
    raw = {"server": server, "deployments": [{"name": "m", "provider": "openai_compatible",
                                              "replicas": _replicas(2), **deployment}]}
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_sixty_four_replicas_route_and_the_table_exists_only_for_sticky_deployments():
    cfg = parse_config({"deployments": [{"name": "m", "provider": "openai_compatible", "replicas": _replicas(64)}]})
    layout, _ = plan(cfg, 1, MetricsLayout(cfg))
    assert layout.max_sessions == 0                             # no sticky deployment: no table
    assert plan(config("sticky", max_sessions=5000), 1, MetricsLayout(config("sticky")))[0].max_sessions == 5000
