"""The supervisor and its workers: sharing the socket, replacement, draining."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import openai
import pytest

from conftest import upstream_config
from procs import children_of, http_json, wait_for, worker_prefix

MESSAGES = [{"role": "user", "content": "ping"}]


def test_two_workers_both_serve(start_gateway):
    gw = start_gateway(workers=2)
    assert len(children_of(gw.pid)) == 2
    seen: set[str] = set()
    lock = threading.Lock()

    def hammer():
        for _ in range(60):
            prefix = worker_prefix(gw.base)
            with lock:
                seen.add(prefix)
                if len(seen) >= 2:
                    return

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 2, f"only one worker answered: {seen}"


def test_killed_worker_is_replaced_and_others_keep_serving(start_gateway):
    gw = start_gateway(workers=2)
    before = set(children_of(gw.pid))
    assert len(before) == 2
    victim = sorted(before)[0]
    failures = []
    served = [0]
    stop = threading.Event()

    def traffic():
        client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=10)
        while not stop.is_set():
            try:
                client.chat.completions.create(model="echo", messages=MESSAGES)
                served[0] += 1
            except openai.APIConnectionError:
                pass  # a connection the dying worker held; the SDK would retry it
            except openai.APIError as e:
                failures.append(e)

    t = threading.Thread(target=traffic)
    t.start()
    assert wait_for(lambda: served[0] >= 10)    # traffic is flowing
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: len(set(children_of(gw.pid)) - before) == 1 and len(children_of(gw.pid)) == 2,
                        timeout=2.0)
    replaced_after = time.monotonic() - killed_at
    after = served[0]
    assert wait_for(lambda: served[0] >= after + 20)   # and keeps flowing once the worker is replaced
    stop.set()
    t.join(10)
    assert replaced, f"worker not replaced within 2 s: {children_of(gw.pid)}"
    assert replaced_after <= 2.0
    assert not failures
    assert victim not in children_of(gw.pid)
    status, _, _ = http_json("GET", gw.base + "/v1/models")
    assert status == 200


def test_sigterm_drains_a_stream_in_flight_and_exits_0(start_gateway, mock_upstream, shm_entries):
    shm_before = shm_entries()
    mock_upstream.control(tokens=10, itl_ms=100)  # a ~1 s stream
    gw = start_gateway(upstream_config(mock_upstream.base))
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    os.kill(gw.pid, signal.SIGTERM)
    rest = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == "ping " * 10
    assert rest[-1].choices[0].finish_reason == "stop"
    assert gw.proc.wait(20) == 0
    # no new connections once drained
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
    assert shm_entries() <= shm_before
    assert children_of(gw.pid) == []


def test_sigint_stops_cleanly(start_gateway):
    gw = start_gateway(workers=2)
    workers = children_of(gw.pid)
    os.kill(gw.pid, signal.SIGINT)
    assert gw.proc.wait(20) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_supervisor_killed_while_its_workers_start_leaves_no_worker_behind(start_gateway):
    """The workers are still importing (a second or two after the announcement) when the supervisor
    dies: each still hears of it (the kernel's parent-death signal, asked before the imports) and
    stops once it can, instead of serving on as an orphan nobody will stop."""
    gw = start_gateway("""
        [server]
        drain_delay_s = 0
        drain_grace_s = 1

        [[deployments]]
        name = "m"
        provider = "mock"
    """, workers=2)
    workers = children_of(gw.pid)
    assert len(workers) == 2
    os.kill(gw.pid, signal.SIGKILL)
    gw.proc.wait(10)
    assert wait_for(lambda: not any(_running(pid) for pid in workers), timeout=20), \
        [pid for pid in workers if _running(pid)]


def test_drain_is_bounded_by_the_grace_period(start_gateway, mock_upstream):
    mock_upstream.control(tokens=100, itl_ms=100)  # a 10 s stream, grace is 1 s
    config = upstream_config(mock_upstream.base).replace("drain_grace_s = 10", "drain_grace_s = 1")
    gw = start_gateway(config, workers=1)
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    t0 = time.monotonic()
    os.kill(gw.pid, signal.SIGTERM)
    assert gw.proc.wait(15) == 0
    assert time.monotonic() - t0 < 8


def test_slow_client_cannot_hold_a_connection(start_gateway):
    config = """
        [server]
        keepalive_timeout_s = 1.0
        client_body_timeout_s = 1.0

        [[deployments]]
        name = "echo"
        provider = "mock"
    """
    gw = start_gateway(config, workers=1)
    # 1: a client that never finishes its request head is cut off
    slow = socket.create_connection(("127.0.0.1", gw.port))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    # 2: a client that sends a head promising a body it never sends gets 408
    stalled = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    stalled.putrequest("POST", "/v1/chat/completions")
    stalled.putheader("content-type", "application/json")
    stalled.putheader("content-length", "100")
    stalled.endheaders(b'{"model": "echo"')
    # meanwhile the single worker serves others
    for _ in range(5):
        assert http_json("POST", gw.base + "/v1/chat/completions",
                         {"model": "echo", "messages": MESSAGES})[0] == 200
    assert stalled.getresponse().status == 408
    slow.settimeout(5)
    t0 = time.monotonic()
    assert slow.recv(1024) == b""  # closed by the server
    assert time.monotonic() - t0 < 4.5
