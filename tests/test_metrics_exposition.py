"""/metrics as Prometheus reads it: HELP and TYPE for every family, every answer counted,
per-worker process series for 2 workers, readable from either worker."""
from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

import pytest

from procs import children_of, http_json, wait_for
from promtext import ExpositionError, parse

ADMIN = {"Authorization": "Bearer adm", "connection": "close"}
CONFIG = """
    [server]
    admin_key = { value = "adm" }
    max_body_bytes = 4096
    drain_grace_s = 5

    [[deployments]]
    name = "echo"
    provider = "mock"
    fallbacks = ["other"]

    [[deployments]]
    name = "other"
    provider = "mock"
"""
CONTRACT_FAMILIES = {
    "fastinfer_requests_total": "counter", "fastinfer_request_duration_seconds": "histogram",
    "fastinfer_ttft_seconds": "histogram", "fastinfer_overhead_seconds": "histogram",
    "fastinfer_upstream_requests_total": "counter", "fastinfer_retries_total": "counter",
    "fastinfer_fallbacks_total": "counter", "fastinfer_queue_depth": "gauge", "fastinfer_in_flight": "gauge",
    "fastinfer_rejected_total": "counter", "fastinfer_circuit_state": "gauge", "fastinfer_tokens_total": "counter",
    "fastinfer_cost_usd_total": "counter", "fastinfer_session_rebuilds_total": "counter",
}
WORKER_FAMILIES = {
    "fastinfer_worker_requests_total": "counter", "fastinfer_worker_connections": "gauge",
    "fastinfer_worker_resident_memory_bytes": "gauge", "fastinfer_worker_open_fds": "gauge",
    "fastinfer_worker_event_loop_lag_seconds": "gauge", "fastinfer_worker_connections_rebalanced_total": "counter",
    "fastinfer_worker_gc_collections_total": "counter", "fastinfer_worker_gc_collected_objects_total": "counter",
}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def scrape(gw) -> dict:
    req = urllib.request.Request(gw.base + "/metrics", headers={"connection": "close"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(resp.read().decode())


def test_the_strict_parser_rejects_what_prometheus_would_not_want():
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n")
    families = parse(good)
    assert families["a_total"].by("x") == {"1": 3.0} and families["h"].type == "histogram"
    for bad in (
        "a_total 1\n",                                                          # no HELP/TYPE
        "# TYPE a_total counter\na_total 1\n",                                  # no HELP
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",    # series twice
        "# HELP a_total A.\n# TYPE a_total count\na_total 1\n",                 # unknown type
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=1} 1\n",          # unquoted label
        good.replace('h_bucket{le="1"} 1', 'h_bucket{le="1"} 3'),                # not cumulative
        good.replace("h_count 2", "h_count 5"),                                  # count != +Inf bucket
        good + 'a_total{x="2"} 1\n',                                             # family split
        good[:-1],                                                               # no final newline
    ):
        with pytest.raises(ExpositionError):
            parse(bad)


def test_every_family_has_help_and_type_and_every_answer_is_counted(start_gateway):
    gw = start_gateway(CONFIG, workers=2)
    before = scrape(gw)
    for name, kind in {**CONTRACT_FAMILIES, **WORKER_FAMILIES, "fastinfer_operator_requests_total": "counter"}.items():
        assert before[name].type == kind and before[name].help, name
    assert all(f.name.startswith("fastinfer_") for f in before.values())

    # client API answers: fastinfer_requests_total{deployment, code}
    assert http_json("POST", gw.base + "/v1/chat/completions", CHAT)[0] == 200
    assert http_json("POST", gw.base + "/v1/chat/completions", {**CHAT, "model": "nope"})[0] == 404
    assert http_json("POST", gw.base + "/v1/chat/completions", b"{not json")[0] == 400
    # a body its checks refuse is the client error of the deployment it names
    assert http_json("POST", gw.base + "/v1/chat/completions", {**CHAT, "messages": "hi"})[0] == 400
    assert http_json("POST", gw.base + "/v1/chat/completions", {**CHAT, "pad": "x" * 8192})[0] == 413
    assert http_json("GET", gw.base + "/no/such/path")[0] == 404
    assert http_json("GET", gw.base + "/v1/models")[0] == 200
    # the operator's routes: fastinfer_operator_requests_total{route, code}
    assert http_json("GET", gw.base + "/healthz")[0] == 200
    assert http_json("GET", gw.base + "/readyz")[0] == 200
    assert http_json("GET", gw.base + "/admin/state", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert http_json("GET", gw.base + "/admin/state", headers=ADMIN)[0] == 200
    assert http_json("POST", gw.base + "/admin/circuits/echo/nope", {"action": "reset"}, headers=ADMIN)[0] == 404
    with urllib.request.urlopen(gw.base + "/dashboard", timeout=10) as resp:
        assert resp.status == 200

    after = scrape(gw)
    requests = delta(before, after, "fastinfer_requests_total", "deployment", "code")
    assert requests == {("echo", "200"): 1, ("", "404"): 2, ("", "400"): 1, ("echo", "400"): 1, ("", "413"): 1,
                        ("", "200"): 1}
    operator = delta(before, after, "fastinfer_operator_requests_total", "route", "code")
    assert operator == {("healthz", "200"): 1, ("readyz", "200"): 1, ("admin", "401"): 1, ("admin", "200"): 1,
                        ("admin", "404"): 1, ("dashboard", "200"): 1, ("metrics", "200"): 1}


def delta(before: dict, after: dict, family: str, *names: str) -> dict[tuple, float]:
    """{values of the labels ``names``: increase} of the series of ``family`` that moved between two scrapes."""
    old = before[family].series()
    return {tuple(dict(labels)[n] for n in names): value - old.get(labels, 0)
            for labels, value in after[family].series().items() if value != old.get(labels, 0)}


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_per_worker_series_for_two_workers(start_gateway):
    gw = start_gateway(CONFIG, workers=2)
    sent = 0   # every request this test sends the gateway: no worker can have received more

    def scraped() -> dict:
        nonlocal sent
        sent += 1
        return scrape(gw)
    def published() -> dict | None:
        """A scrape once both workers have published (each does as it starts serving)."""
        families = scraped()
        memory = families["fastinfer_worker_resident_memory_bytes"].by("worker").values()
        return families if all(memory) else None
    families = wait_for(published, timeout=10)
    for name in WORKER_FAMILIES:
        assert set(families[name].by("worker")) == {"0", "1"}, name
    # memory and descriptors are the workers' own (published once a second: compare loosely)
    pids = children_of(gw.pid)
    assert len(pids) == 2
    # a worker still opening its pools while it publishes can be a second behind: read again until it caught up
    def own_figures() -> bool:
        families = scraped()
        memory = families["fastinfer_worker_resident_memory_bytes"].by("worker").values()
        fds = families["fastinfer_worker_open_fds"].by("worker").values()
        live_fds = [len(os.listdir(f"/proc/{pid}/fd")) for pid in pids]
        return (all(any(0.7 <= rss / rss_of(pid) <= 1.3 for pid in pids) for rss in memory)
                and all(any(abs(n - live) <= 4 for live in live_fds) for n in fds))
    assert wait_for(own_figures, timeout=10, interval=0.2), (
        scraped()["fastinfer_worker_open_fds"].by("worker"), [len(os.listdir(f"/proc/{pid}/fd")) for pid in pids])
    assert all(0 <= lag < 0.5 for lag in families["fastinfer_worker_event_loop_lag_seconds"].by("worker").values())

    # connections held open show up, and go away again
    def connections() -> float:
        return sum(scraped()["fastinfer_worker_connections"].by("worker").values())
    held = []
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sent += 1
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        held.append(s)
    assert wait_for(lambda: connections() >= 6, timeout=10)
    for s in held:
        s.close()
    assert wait_for(lambda: connections() <= 1, timeout=10)   # the scrape's own, at most

    # requests: every one a worker received, the scrapes and malformed ones included, once
    def received() -> float:
        return sum(scraped()["fastinfer_worker_requests_total"].by("worker").values())
    start = received()
    for _ in range(20):
        assert http_json("POST", gw.base + "/v1/chat/completions", CHAT)[0] == 200
        sent += 1
    bad = socket.create_connection(("127.0.0.1", gw.port))
    bad.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    sent += 1
    assert b" 400 Bad Request" in bad.recv(4096)
    bad.close()
    assert wait_for(lambda: received() >= start + 21, timeout=10)
    assert received() <= sent

    # a reload: the counters carry on from where they were, the gauges are the new workers'
    total = received()
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_for(lambda: not set(children_of(gw.pid)) & set(pids) and len(children_of(gw.pid)) == 2,
                    timeout=20)
    new_pids = children_of(gw.pid)
    assert total <= received() <= sent
    memory = scraped()["fastinfer_worker_resident_memory_bytes"].by("worker")
    assert set(memory) == {"0", "1"}
    assert all(any(0.7 <= rss / rss_of(pid) <= 1.3 for pid in new_pids) for rss in memory.values())


def test_event_loop_lag_of_a_stalled_worker_is_seen_from_the_other(start_gateway):
    gw = start_gateway(CONFIG, workers=2)
    # both workers serve, so both probe their loops (each starts as it starts serving)
    assert wait_for(lambda: all(scrape(gw)["fastinfer_worker_resident_memory_bytes"].by("worker").values()))
    victim = children_of(gw.pid)[0]

    def worst_lag() -> float:
        return max(scrape(gw)["fastinfer_worker_event_loop_lag_seconds"].by("worker").values())
    assert worst_lag() < 0.5
    os.kill(victim, signal.SIGSTOP)    # its loop is stopped: its timers fall due unserved
    try:
        time.sleep(0.8)
    finally:
        os.kill(victim, signal.SIGCONT)
    assert wait_for(lambda: worst_lag() >= 0.6, timeout=10)
    assert wait_for(lambda: worst_lag() < 0.5, timeout=10)   # the next second's samples replace it
