"""GET /admin/stats: the host's numbers as JSON, the same numbers /metrics shows."""
from __future__ import annotations

import json
import os
import re
import signal
import urllib.request

from conftest import upstream_config
from procs import children_of, http_json, wait_for, wait_workers_serving

KEY = "adm-secret-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}
_SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+)$')


def prometheus(base: str) -> dict:
    """{(name, frozenset(labels)): value} from /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def sample(prom: dict, name: str, **labels) -> float:
    return prom.get((name, frozenset(labels.items())), 0.0)


def test_stats_are_the_host_totals_metrics_shows(start_gateway, mock_upstream):
    config = upstream_config(mock_upstream.base, price="{ input_per_mtok = 2.5, output_per_mtok = 10.0 }")
    gw = start_gateway(config.replace("drain_grace_s = 10", f'drain_grace_s = 10\nadmin_key = {{ value = "{KEY}" }}'))
    chat = {"model": "m", "messages": [{"role": "user", "content": "count these tokens please"}]}
    for _ in range(3):   # fresh connections: both workers count into the same segment
        assert http_json("POST", gw.base + "/v1/chat/completions", chat, headers={"connection": "close"})[0] == 200
    stream = urllib.request.Request(gw.base + "/v1/chat/completions", data=json.dumps({**chat, "stream": True}).encode(),
                                    headers={"content-type": "application/json"})
    with urllib.request.urlopen(stream, timeout=10) as r:
        assert b"[DONE]" in r.read()
    assert http_json("POST", gw.base + "/v1/chat/completions", {**chat, "model": "nope"})[0] == 404
    assert http_json("POST", gw.base + "/v1/chat/completions", {**chat, "messages": "not a list"})[0] == 400

    status, headers, stats = http_json("GET", gw.base + "/admin/stats", headers=ADMIN)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    prom = prometheus(gw.base)
    (m,) = stats["deployments"]
    assert m["name"] == "m" and m["provider"] == "openai_compatible" and m["model"] == "mock-model"
    assert m["requests"]["by_code"] == {"200": 4, "400": 1}    # the refused body named m: its client error
    assert m["requests"]["total"] == 5
    for code, n in m["requests"]["by_code"].items():
        assert sample(prom, "fastinfer_requests_total", deployment="m", code=code) == n
    assert stats["unrouted"] == {"404": 1}    # refused before a deployment was known

    assert m["tokens"]["input"] > 0 and m["tokens"]["output"] > 0
    for direction, n in m["tokens"].items():
        assert sample(prom, "fastinfer_tokens_total", deployment="m", direction=direction) == n
    assert m["cost_usd"] > 0
    assert m["cost_usd"] == sample(prom, "fastinfer_cost_usd_total", deployment="m")

    assert stats["buckets"][0] == 0.00001 and stats["buckets"] == sorted(stats["buckets"])
    duration = m["histograms"]["request_duration_seconds"]
    assert duration["count"] == 5 == sample(prom, "fastinfer_request_duration_seconds_count", deployment="m")
    assert len(duration["cumulative"]) == len(stats["buckets"]) + 1 and duration["cumulative"][-1] == 5
    assert duration["cumulative"] == sorted(duration["cumulative"])
    assert m["histograms"]["ttft_seconds"]["count"] == 1        # one stream

    (replica,) = m["replicas"]
    assert replica["name"] == "r0" and replica["circuit"]["state"] == "closed"
    assert replica["upstream"] == {"success": 4}
    assert sample(prom, "fastinfer_upstream_requests_total", deployment="m", replica="r0", outcome="success") == 4
    assert m["in_flight"] == 0 and m["queue_depth"] == 0 and m["max_concurrency"] == 64
    # sections their owners fill in later are there, empty
    assert stats["keys"] == [] and m["limits"] == []
    # the replica's host-wide load and health: idle, and healthy (no check fails, circuit closed)
    assert replica["in_flight"] == 0 and replica["healthy"] is True

    text = json.dumps(stats)
    assert "sk-replica-secret" not in text and KEY not in text


def test_stats_follow_a_forced_circuit(start_gateway, mock_upstream):
    gw = start_gateway(upstream_config(mock_upstream.base).replace(
        "drain_grace_s = 10", f'drain_grace_s = 10\nadmin_key = {{ value = "{KEY}" }}'))
    assert http_json("POST", gw.base + "/admin/circuits/m/r0", {"action": "force_open", "duration_s": 30},
                     headers=ADMIN)[0] == 200
    circuit = http_json("GET", gw.base + "/admin/stats", headers=ADMIN)[2]["deployments"][0]["replicas"][0]["circuit"]
    assert circuit["state"] == "open" and 25 < circuit["retry_after_s"] <= 30
    for bad in (0, -1, 1e9, "60", True, None):
        assert http_json("POST", gw.base + "/admin/circuits/m/r0", {"action": "force_open", "duration_s": bad},
                         headers=ADMIN)[0] == 400, bad


def test_stats_show_each_worker_and_the_restarts_of_its_slot(start_gateway, mock_upstream):
    config = upstream_config(mock_upstream.base)
    gw = start_gateway(config.replace("drain_grace_s = 10", f'drain_grace_s = 10\nadmin_key = {{ value = "{KEY}" }}'))
    assert wait_workers_serving(gw.base, 2)

    def workers() -> list[dict]:
        status, _, stats = http_json("GET", gw.base + "/admin/stats", headers=ADMIN)
        assert status == 200
        return stats["workers"]

    # each worker publishes its gauges and request count about once a second (wait_workers_serving
    # reached both)
    assert wait_for(lambda: all(w["resident_memory_bytes"] > 0 and w["requests"] > 0 for w in workers()), timeout=10)
    shown, prom = workers(), prometheus(gw.base)
    assert [w["worker"] for w in shown] == ["0", "1"] and all(w["serving"] for w in shown)
    for w in shown:
        assert w["restarts"] == {"died": 0, "failed_to_start": 0}
        assert w["open_fds"] > 0 and w["event_loop_lag_seconds"] >= 0
        for gc_field in ("gc_collections", "gc_collected_objects"):     # read before the scrape: never above it
            assert w[gc_field] <= sample(prom, f"fastinfer_worker_{gc_field}_total", worker=w["worker"])
        assert w["requests"] <= sample(prom, "fastinfer_worker_requests_total", worker=w["worker"])
    # a worker killed: its slot counts a restart, and its replacement serves
    victim = children_of(gw.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: sum(w["restarts"]["died"] for w in workers()) == 1, timeout=10)
    (slot,) = [w for w in workers() if w["restarts"]["died"]]
    assert sample(prometheus(gw.base), "fastinfer_worker_restarts_total", worker=slot["worker"], reason="died") == 1
    assert wait_for(lambda: all(w["serving"] for w in workers()), timeout=10)
