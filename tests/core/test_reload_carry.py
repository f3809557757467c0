"""Reload keeps the host's state, matched by name: through HostState (what the supervisor
calls at the roll and at the end of the old generation's drain), and end to end through a
running gateway's reload."""
import re
import urllib.error
import urllib.request

from fastinfer._core.constants import OPEN, SESSION_NONE, SESSION_OPEN
from fastinfer.config import parse_config
from fastinfer.process.hostwide import HostState

from procs import http_json, wait_for

HASH = "ab" * 32


def config(deployments, keys):
    return parse_config({"deployments": deployments, "keys": keys})


OLD = config(
    [{"name": "m", "provider": "mock", "routing": "sticky", "replicas": [{"name": "a"}, {"name": "b"}],
      "rate_limit": {"rpm": 600}},
     {"name": "n", "provider": "mock", "replicas": [{"name": "c"}]}],
    [{"name": "k1", "key_sha256": HASH, "rpm": 60},
     {"name": "k2", "key_sha256": "cd" * 32, "rpm": 100, "tpm": 1000}])
NEW = config(   # reordered, a replica and a deployment added, a key removed, a limit changed
    [{"name": "o", "provider": "mock", "routing": "prefix"},
     {"name": "n", "provider": "mock", "replicas": [{"name": "c"}]},
     {"name": "m", "provider": "mock", "routing": "sticky", "replicas": [{"name": "d"}, {"name": "b"}, {"name": "a"}],
      "rate_limit": {"rpm": 600}}],
    [{"name": "k2", "key_sha256": "cd" * 32, "rpm": 200, "tpm": 1000}])


def test_host_state_carries_by_name_and_adds_the_drain():
    old, new = HostState.create(OLD, 2), HostState.create(NEW, 2, metrics_live=False)   # as a reload makes it
    try:
        for host in (old, new):          # no refill: the levels below do not depend on how long a step takes
            host.segment.set_test_clock(10**12)
        seg, ix = old.segment, old.index
        m, a, b = ix.deployments["m"], ix.replicas[("m", "a")], ix.replicas[("m", "b")]
        seg.breaker(*a).force_open(120.0)
        seg.replicas(m).set_healthy(b[1], False)
        assert seg.bucket(ix.buckets[("key", "k2", "requests")]).take(30)
        assert seg.bucket(ix.buckets[("deployment", "m", "requests")]).take(100)
        seg.key_spend(ix.keys["k2"]).add(20_000, 4_200)
        seg.sessions.bind(b"s" * 16, m, b[1], 300.0)
        seg.sessions.backend_transition(b"s" * 16, SESSION_NONE, SESSION_OPEN, b[1])
        requests = old.metrics_layout.counter_index[("requests_total", ("m", "200"))]
        seg.counters.add(requests, 5)
        seg.histograms.observe(old.metrics_layout.histogram_index[("ttft_seconds", "m")], 0.2)

        carried = new.carry_state_from(old)                  # the supervisor's call at the roll
        assert old.metrics_live and not new.metrics_live      # /metrics answers from the old segment ...
        new_requests = new.metrics_layout.counter_index[("requests_total", ("m", "200"))]
        assert new.segment.counters.get(new_requests) == 0    # ... whose counts stay there until
        counted = new.hand_metrics_over_from(old)             # the old generation is retired
        assert new.metrics_live and not old.metrics_live

        s2, ix2 = new.segment, new.index
        m2, a2, b2 = ix2.deployments["m"], ix2.replicas[("m", "a")], ix2.replicas[("m", "b")]
        assert s2.breaker(*a2).state == OPEN and 119 < s2.breaker(*a2).retry_after_s <= 120
        assert s2.breaker(*ix2.replicas[("m", "d")]).state != OPEN
        assert not s2.replicas(m2).healthy(b2[1]) and s2.replicas(m2).healthy(a2[1])
        assert 69 < s2.bucket(ix2.buckets[("key", "k2", "requests")]).available() < 71   # level kept ...
        assert s2.bucket(ix2.buckets[("key", "k2", "requests")]).capacity == 200         # ... new limit
        assert 499 < s2.bucket(ix2.buckets[("deployment", "m", "requests")]).available() < 501
        assert s2.key_spend(ix2.keys["k2"]).spent(20_000) == 4_200
        info = s2.sessions.get(b"s" * 16)
        assert (info.deployment, info.replica, info.backend_state, info.backend_replica) == (m2, b2[1], SESSION_OPEN, b2[1])
        assert s2.counters.get(new_requests) == 5
        assert s2.histograms.snapshot(new.metrics_layout.histogram_index[("ttft_seconds", "m")])[1] == 1
        assert s2.prefix(ix2.deployments["o"]).capacity > 0 and s2.prefix(m2).capacity == 0

        seg.counters.add(requests, 2)                            # the old generation drains
        seg.key_spend(ix.keys["k2"]).add(20_000, 800)
        seg.bucket(ix.buckets[("key", "k2", "tokens")]).charge(300)
        new.carry_state_from(old, since=carried)              # ... and has exited
        new.hand_metrics_over_from(old, since=counted)
        assert s2.counters.get(new_requests) == 7
        assert s2.key_spend(ix2.keys["k2"]).spent(20_000) == 5_000
        assert 699 < s2.bucket(ix2.buckets[("key", "k2", "tokens")]).available() < 702
    finally:
        old.close()
        new.close()


def test_a_reload_given_up_gives_its_session_bindings_back_but_for_those_bound_again():
    old, new = HostState.create(OLD, 2), HostState.create(NEW, 2, metrics_live=False)   # as a reload makes it
    try:
        m, a, b = old.index.deployments["m"], old.index.replicas[("m", "a")], old.index.replicas[("m", "b")]
        old.segment.sessions.bind(b"s" * 16, m, a[1], 300.0)
        old.segment.sessions.bind(b"t" * 16, m, b[1], 300.0)
        new.carry_state_from(old)                             # the roll: the bindings are the new segment's
        assert old.segment.sessions.get(b"s" * 16) is None
        old.segment.sessions.bind(b"t" * 16, m, a[1], 300.0)  # re-bound by the old workers meanwhile

        old.take_back_sessions(new)                           # the roll given up

        assert old.segment.sessions.get(b"s" * 16).replica == a[1]   # the index of old's, not new's
        assert old.segment.sessions.get(b"t" * 16).replica == a[1]   # the newer binding stays
        assert new.segment.sessions.entries() == []
    finally:
        old.close()
        new.close()


ADMIN = {"Authorization": "Bearer adm"}


def scrape(gw) -> str:
    """/metrics; "" for its documented 503 (``metrics_handed_over``) in the instant a reload hands the
    host's totals to the next generation: the callers wait for a scrape that says what they need."""
    try:
        with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as e:
        if e.code != 503 or b"metrics_handed_over" not in e.read():
            raise
        return ""


def value(text, series):
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_a_reload_keeps_circuit_states_and_histograms(start_gateway, mock_upstream):
    gw = start_gateway(f"""
        [server]
        drain_grace_s = 10
        admin_key = {{ value = "adm" }}

        [[deployments]]
        name = "m"
        provider = "openai_compatible"

        [[deployments.replicas]]
        name = "r0"
        base_url = "{mock_upstream.base}/v1"

        [[deployments.replicas]]
        name = "r1"
        base_url = "{mock_upstream.base}/v1"
    """)
    for _ in range(4):
        assert http_json("POST", gw.base + "/v1/chat/completions",
                         {"model": "m", "messages": [{"role": "user", "content": "x"}]})[0] == 200
    assert http_json("POST", gw.base + "/admin/circuits/m/r1",
                     {"action": "force_open", "duration_s": 600}, headers=ADMIN)[0] == 200
    count = 'fastinfer_request_duration_seconds_count{deployment="m"}'
    assert wait_for(lambda: value(scrape(gw), count) == 4)

    config_path = gw.args[gw.args.index("--config") + 1]
    with open(config_path, "a") as f:
        f.write('\n[[deployments]]\nname = "echo2"\nprovider = "mock"\n')
    assert http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)[0] == 202

    def reloaded():
        text = scrape(gw)
        return 'deployment="echo2"' in text and text
    text = wait_for(reloaded)
    assert text, "the new generation never served /metrics"
    assert value(text, 'fastinfer_circuit_state{deployment="m",replica="r1"}') == 1    # still open
    assert value(text, 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 0
    assert value(text, count) == 4                                                        # not reset
    for _ in range(3):                                       # r1 is open: everything goes to r0
        status, headers, _ = http_json("POST", gw.base + "/v1/chat/completions",
                                       {"model": "m", "messages": [{"role": "user", "content": "y"}]})
        assert status == 200 and headers["x-fastinfer-replica"] == "r0"
    assert wait_for(lambda: value(scrape(gw), count) == 7)
