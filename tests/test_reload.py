"""Config reload: a new generation of workers takes over without dropping a request."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import textwrap
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import upstream_config
from procs import children_of, http_json, wait_for

ADMIN = {"Authorization": "Bearer adm"}


def with_admin(text: str) -> str:
    return text.replace("drain_grace_s = 10", 'drain_grace_s = 10\nadmin_key = { value = "adm" }')


def models(gw) -> list[str]:
    return [m["id"] for m in http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[2]["data"]]


def test_reload_adds_a_deployment_and_finishes_streams_in_flight(start_gateway, mock_upstream, workdir):
    base = with_admin(upstream_config(mock_upstream.base))
    gw = start_gateway(base)
    config_path = gw.args[gw.args.index("--config") + 1]
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}]).choices
    mock_upstream.control(tokens=10, itl_ms=100)
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}], stream=True)
    next(iter(stream))
    with open(config_path, "a") as f:
        f.write('\n[[deployments]]\nname = "echo2"\nprovider = "mock"\n')
    status, _, body = http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)
    assert status == 202
    rest = list(stream)  # the old generation drains: this stream completes
    assert rest[-1].choices[0].finish_reason == "stop"
    assert wait_for(lambda: "echo2" in models(gw) and all("echo2" in models(gw) for _ in range(4)))
    assert client.chat.completions.create(model="echo2", messages=[{"role": "user", "content": "c"}]).choices
    # counters carried over, including what the old generation counted while draining
    import urllib.request

    def counted() -> str:
        with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
            return resp.read().decode()
    assert wait_for(lambda: 'fastinfer_requests_total{deployment="m",code="200"} 2' in counted())
    assert 'fastinfer_session_rebuilds_total{deployment="m",cause="reload"} 1' in counted()


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(start_gateway, mock_upstream):
    gw = start_gateway(with_admin(upstream_config(mock_upstream.base)))
    config_path = gw.args[gw.args.index("--config") + 1]
    with open(config_path, "a") as f:
        f.write('\n[[deployments]]\nname = "broken"\nprovider = "mock"\nmax_concurrency = -4\n')
    status, _, body = http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)
    assert status == 400
    assert "deployments[1].max_concurrency" in body["error"]["message"]
    # SIGHUP with the same bad file: the supervisor refuses too and keeps its workers
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in gw.stderr())
    assert models(gw) == ["m"]
    assert http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "x"}]})[0] == 200


def test_a_key_the_file_cannot_give_is_refused_by_the_admin_reload_as_by_the_supervisor(start_gateway, mock_upstream):
    """The admin API checks what the supervisor will: a gateway key whose source gives nothing is a
    400 there (not a 202 for a reload the supervisor then refuses)."""
    gw = start_gateway(with_admin(upstream_config(mock_upstream.base)))
    config_path = gw.args[gw.args.index("--config") + 1]
    with open(config_path, "a") as f:
        f.write('\n[[keys]]\nname = "team"\nkey = { env = "FASTINFER_TEST_UNSET_KEY_VAR" }\n')
    status, _, body = http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)
    assert status == 400, body
    assert "keys[0].key" in body["error"]["message"] and "FASTINFER_TEST_UNSET_KEY_VAR" in body["error"]["message"]
    assert http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "x"}]})[0] == 200


def test_no_counter_goes_down_in_any_scrape_through_a_reload_under_traffic(start_gateway, mock_upstream):
    """Prometheus reads a counter that goes down as a restart of it (a spike in every rate).
    Scrapes every few milliseconds through a reload, with requests going on: every value read is at
    least the one before, whichever generation's worker answered, and the totals end exact."""
    gw = start_gateway(with_admin(upstream_config(mock_upstream.base)))
    config_path = gw.args[gw.args.index("--config") + 1]
    old_workers = set(children_of(gw.pid))
    served = [0]
    stop = threading.Event()
    series = ('fastinfer_requests_total{deployment="m",code="200"}',
              'fastinfer_request_duration_seconds_count{deployment="m"}')
    read: list[tuple[float, ...]] = []
    handed_over = [0]      # the moment a scrape finds no generation answering: a 503

    def traffic():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            status = http_json("POST", gw.base + "/v1/chat/completions",
                               {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                               headers={"connection": "close"})[0]
            served[0] += status == 200
            time.sleep(0.005)

    stats_read: list[tuple[float, ...]] = []     # the dashboard's source, /admin/stats, likewise

    def scrapes():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
                    text = resp.read().decode()
                status, _, stats = http_json("GET", gw.base + "/admin/stats", headers=ADMIN)
            except urllib.error.HTTPError as e:
                assert e.code == 503, e.code
                handed_over[0] += 1
                continue
            values = []
            for name in series:
                m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
                values.append(float(m.group(1)) if m else 0.0)
            read.append(tuple(values))
            if status == 503:
                handed_over[0] += 1
            else:
                m = next(d for d in stats["deployments"] if d["name"] == "m")
                stats_read.append((m["requests"]["by_code"].get("200", 0),
                                   m["histograms"]["request_duration_seconds"]["count"]))
            time.sleep(0.005)

    threads = [threading.Thread(target=traffic), threading.Thread(target=scrapes)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: served[0] >= 20, timeout=10)
        with open(config_path, "a") as f:
            f.write('\n[[deployments]]\nname = "echo2"\nprovider = "mock"\n')
        assert http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)[0] == 202
        # the old generation has drained and exited, and the new one served a while on its own
        assert wait_for(lambda: len(children_of(gw.pid)) == 2 and not set(children_of(gw.pid)) & old_workers,
                        timeout=20)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(40)
    assert len(read) > 50 and len(stats_read) > 50, (len(read), len(stats_read))
    for values in (read, stats_read):
        for before, after in zip(values, values[1:]):
            assert all(b <= a for b, a in zip(before, after)), (before, after)
    assert handed_over[0] <= 4, handed_over[0]
    assert wait_for(lambda: all(v == served[0] for v in _values(gw, series)), timeout=10), \
        (_values(gw, series), served[0])


def _values(gw, series) -> list[float]:
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1)) for name in series]


CONCURRENCY_LIMITED = {
    "key": ("max_concurrency = 2", "max_concurrency = 64", 429),
    "deployment": ("", 'max_concurrency = 2\non_capacity_exhausted = "reject"', 503),
}


@pytest.mark.parametrize("limited", list(CONCURRENCY_LIMITED))
def test_a_concurrency_limit_holds_across_the_generations_while_the_old_one_drains(start_gateway, limited):
    """The old generation's streams still in flight count in the new generation's limits (they end
    in the old segment): a reload does not double what may be in flight; as they end, the new
    generation admits again."""
    key_limit, deployment_limit, refusal = CONCURRENCY_LIMITED[limited]
    gw = start_gateway(textwrap.dedent(f"""
        [server]
        admin_key = {{ value = "adm" }}
        drain_grace_s = 30

        [[keys]]
        name = "k1"
        key = {{ value = "sk-gw-reload-limit-1" }}
        {key_limit}

        [[deployments]]
        name = "m"
        provider = "mock"
        mock = {{ tokens = 400, itl_ms = 50 }}
        {deployment_limit}
    """))
    port = int(gw.base.rsplit(":", 1)[1])

    def stream() -> tuple[http.client.HTTPConnection, int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/chat/completions",
                     json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
                     {"authorization": "Bearer sk-gw-reload-limit-1", "content-type": "application/json"})
        answer = conn.getresponse()
        if answer.status == 200:
            answer.read(20)                 # streaming: it holds its slot
        else:
            answer.read()
        return conn, answer.status

    old_workers = set(children_of(gw.pid))
    held = [stream(), stream()]
    try:
        assert [status for _, status in held] == [200, 200]
        assert stream()[1] == refusal
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_for(lambda: len(set(children_of(gw.pid)) - old_workers) == 2, timeout=20)
        time.sleep(1.0)                     # the new generation serves; the old one drains its two streams
        extra = stream()
        extra[0].close()
        assert extra[1] == refusal          # two in flight on the old generation: the host is full
    finally:
        for conn, _ in held:
            conn.close()
    def admitted() -> bool:
        conn, status = stream()
        conn.close()
        return status == 200
    assert wait_for(admitted, timeout=10)     # the old streams ended (their clients left): admitted again
