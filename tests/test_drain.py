"""Reload and stop drop nothing: kept-alive clients, streams at the end of the grace, drain_delay_s.

Durations are asserted with bounds taken from the config (drain_delay_s, drain_grace_s) and
generous slack, never tight wall-clock thresholds.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest
from keepalive_clients import KeptAliveClients
from procs import children_of, http_json, wait_for, wait_workers_serving

ADMIN = {"Authorization": "Bearer adm", "connection": "close"}
ECHO = """
    [server]
    admin_key = { value = "adm" }
    drain_grace_s = 5

    [[deployments]]
    name = "echo"
    provider = "mock"
"""
MESSAGES = [{"role": "user", "content": "ping"}]


def next_generation(gw, old: set[int]) -> bool:
    """True once none of ``old`` is a worker of ``gw`` any more and a full set of new ones is."""
    now = set(children_of(gw.pid))
    return not (now & old) and len(now) == len(old)


def report(clients: KeptAliveClients) -> str:
    return (f"{clients.total} requests, {len(clients.failures)} failed {sorted(set(clients.failures))}, "
            f"{clients.closes_seen} answers said Connection: close, {clients.connections} connections")


def test_reload_under_kept_alive_load_drops_nothing(start_gateway):
    """8 kept-alive clients sending non-stop, no retries, across a SIGHUP and a POST /admin/reload."""
    gw = start_gateway(ECHO, workers=2)
    with KeptAliveClients(gw.port, n=8) as clients:
        assert clients.wait_for_requests(200)
        first = set(children_of(gw.pid))
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_for(lambda: next_generation(gw, first), timeout=20)
        assert clients.wait_for_requests(200)
        second = set(children_of(gw.pid))
        assert http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)[0] == 202
        assert wait_for(lambda: next_generation(gw, second), timeout=20)
        assert clients.wait_for_requests(200)
    print("\n" + report(clients))
    assert clients.failures == []
    # each retired worker told its kept-alive clients to go, rather than closing under them
    assert clients.closes_seen >= 8


# ------------------------------------------------------------------ streams over raw HTTP


def open_stream(port: int, path: str, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    return conn, resp


def first_event(resp: http.client.HTTPResponse) -> bytes:
    event = b""
    while not event.endswith(b"\n\n"):
        line = resp.readline()
        assert line, "the stream ended before its first event"
        event += line
    return event


def slow_stream_config(grace_s: float, delay_s: float = 0.0, tokens: int = 20, itl_ms: int = 100) -> str:
    return f"""
        [server]
        admin_key = {{ value = "adm" }}
        drain_grace_s = {grace_s}
        drain_delay_s = {delay_s}

        [[deployments]]
        name = "echo"
        provider = "mock"

        [[deployments]]
        name = "slow"
        provider = "mock"
        mock = {{ tokens = {tokens}, itl_ms = {itl_ms} }}

        [[deployments]]
        name = "hang"                   # a non-streamed answer that takes ten minutes to start
        provider = "mock"
        mock = {{ ttft_ms = 600000 }}
    """


class StreamingClient:
    """One thread streaming ``slow`` over and over on a kept-alive connection, no retries.
    Every stream must end with [DONE]; anything else is a failure."""

    def __init__(self, port: int):
        self.port = port
        self.completed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        conn = None
        body = json.dumps({"model": "slow", "stream": True, "messages": MESSAGES})
        while not self._stop.is_set():
            conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
                if resp.status != 200 or not text.endswith(b"data: [DONE]\n\n"):
                    self.failures.append(f"status {resp.status}: ...{text[-200:]!r}")
                else:
                    self.completed += 1
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def test_generations_rolled_back_to_back_drop_nothing(start_gateway):
    """Reloads in quick succession, each before the generation it replaces has finished draining
    (streams of ~2 s keep it busy), under kept-alive load: every request answered, every
    stream finished with [DONE] on the generation it started on, the last config serving."""
    gw = start_gateway(slow_stream_config(grace_s=10), workers=2)
    config_path = gw.args[gw.args.index("--config") + 1]
    streams = [StreamingClient(gw.port) for _ in range(2)]
    most_workers = 0
    with KeptAliveClients(gw.port, n=8) as clients:
        assert clients.wait_for_requests(100)
        assert wait_for(lambda: all(s.completed for s in streams), timeout=20)
        for reload in ("sighup", "sighup", "admin"):
            if reload == "admin":
                with open(config_path, "a") as f:
                    f.write('\n[[deployments]]\nname = "added"\nprovider = "mock"\n')
                assert http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)[0] == 202
            else:
                os.kill(gw.pid, signal.SIGHUP)
            # the next reload comes while this one's old generation still drains its streams
            assert wait_for(lambda: len(children_of(gw.pid)) > 2, timeout=20)
            assert clients.wait_for_requests(100)
            most_workers = max(most_workers, len(children_of(gw.pid)))
        # every old generation finishes draining: only the last one is left
        assert wait_for(lambda: len(children_of(gw.pid)) == 2, timeout=30)
        assert clients.wait_for_requests(100)
        completed_before = sum(s.completed for s in streams)
        assert wait_for(lambda: sum(s.completed for s in streams) > completed_before, timeout=20)
    for s in streams:
        s.stop()
    print("\n" + report(clients) + f"; streams: {sum(s.completed for s in streams)} completed, "
          f"at most {most_workers} workers at once")
    assert clients.failures == []
    assert [f for s in streams for f in s.failures] == []
    assert most_workers >= 4          # generations really did overlap
    status, _, body = http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})
    assert status == 200
    assert [m["id"] for m in body["data"]] == ["echo", "slow", "hang", "added"]


# ------------------------------------------------------------------ stop


def request_on(conn: http.client.HTTPConnection, model: str = "echo") -> http.client.HTTPResponse:
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": model, "messages": MESSAGES}),
                 {"content-type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp


def sse_events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e.strip()]


def test_sigterm_drains_in_order_and_cuts_streams_with_an_error_event(start_gateway):
    delay, grace = 1.5, 2.0
    gw = start_gateway(slow_stream_config(grace_s=grace, delay_s=delay, tokens=400, itl_ms=50), workers=2)
    # both workers serving: the checks inside the delay below must not wait on one still starting
    # (a stop during start-up has its own test)
    assert wait_workers_serving(gw.base, 2)
    # two long streams (~20 s), one per client API, and two idle kept-alive connections
    openai_conn, openai_stream = open_stream(gw.port, "/v1/chat/completions",
                                             {"model": "slow", "stream": True, "messages": MESSAGES})
    anthropic_conn, anthropic_stream = open_stream(gw.port, "/v1/messages", {
        "model": "slow", "stream": True, "max_tokens": 1000, "messages": MESSAGES})
    assert first_event(openai_stream).startswith(b"data: {")
    assert first_event(anthropic_stream).startswith(b"event: message_start")
    reused = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    assert request_on(reused).status == 200
    idle = socket.create_connection(("127.0.0.1", gw.port))
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 200 " in idle.recv(4096).split(b"\r\n")[0] + b" "
    # and a non-streamed request whose answer would take ten minutes
    waiting = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    waiting.request("POST", "/v1/chat/completions", json.dumps({"model": "hang", "messages": MESSAGES}),
                    {"content-type": "application/json"})

    t0 = time.monotonic()
    os.kill(gw.pid, signal.SIGTERM)
    # drain_delay_s: readiness fails first, while data requests are still served on new connections
    assert wait_for(lambda: http_json("GET", gw.base + "/readyz", headers={"connection": "close"})[0] == 503,
                    timeout=delay / 2)
    status, headers, body = http_json("POST", gw.base + "/v1/chat/completions",
                                      {"model": "echo", "messages": MESSAGES})
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert headers["Connection"] == "close"
    assert time.monotonic() - t0 < delay, "the checks above must run inside the delay"
    # after the delay the listener is closed: new connections are refused ...
    assert wait_for(lambda: not accepts(gw.port), timeout=delay + 1)
    assert time.monotonic() - t0 >= delay * 0.9
    # ... but a kept-alive connection idle since before the stop is still served, told to close
    answer = request_on(reused)
    assert answer.status == 200 and answer.getheader("connection") == "close"
    assert time.monotonic() - t0 < delay + grace, "the request above must be served inside the grace"

    # the streams run until the grace ends, then end with the caller's error event
    openai_rest = openai_stream.read()
    anthropic_rest = anthropic_stream.read()
    ended = time.monotonic() - t0
    unanswered = waiting.getresponse()
    assert unanswered.status == 503 and unanswered.getheader("connection") == "close"
    assert json.loads(unanswered.read())["error"]["code"] == "shutting_down"
    idle.settimeout(delay + grace + 5)
    assert idle.recv(1) == b""          # closed by the server, at the end of the grace
    closed = time.monotonic() - t0
    assert gw.proc.wait(delay + grace + 5) == 0
    exited = time.monotonic() - t0
    print(f"\nstreams ended at {ended:.2f} s, idle connection closed at {closed:.2f} s, "
          f"exit at {exited:.2f} s (delay {delay} s + grace {grace} s)")

    last = sse_events(openai_rest)[-1]
    assert last.startswith(b"data: ") and json.loads(last[6:])["error"]["code"] == "shutting_down"
    assert b"[DONE]" not in openai_rest
    last = sse_events(anthropic_rest)[-1]
    assert last.startswith(b"event: error\n")
    assert json.loads(last.split(b"data: ", 1)[1])["error"]["type"] == "overloaded_error"
    assert b"message_stop" not in anthropic_rest
    # grace honoured once: not cut before it ends, and gone soon after
    assert delay + grace - 0.25 <= ended <= delay + grace + 1
    assert delay + grace - 0.25 <= closed <= delay + grace + 1
    assert exited <= delay + grace + 1
    for conn in (openai_conn, anthropic_conn, reused, waiting):
        conn.close()
    idle.close()


def test_a_stop_while_the_worker_starts_answers_what_its_listener_holds(start_gateway):
    """A request sent before the stop, while the worker is still starting (its listener already
    queues connections): the worker drains it like any other, a 503 at the end of the grace
    counted from the stop, instead of dying at the signal and its listener resetting the
    connection. One worker, so the request cannot land on another that already serves."""
    # a grace well past a worker's start-up (1-2 s on a loaded machine): the supervisor kills a
    # worker at delay + grace + 0.7 s after the stop, served or not
    delay, grace = 0.5, 4.0
    gw = start_gateway(slow_stream_config(grace_s=grace, delay_s=delay), workers=1)
    waiting = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    waiting.request("POST", "/v1/chat/completions", json.dumps({"model": "hang", "messages": MESSAGES}),
                    {"content-type": "application/json"})
    t0 = time.monotonic()
    os.kill(gw.pid, signal.SIGTERM)     # the worker is importing: it serves ~a second after its fork
    answer = waiting.getresponse()
    answered = time.monotonic() - t0
    assert answer.status == 503 and answer.getheader("connection") == "close"
    assert json.loads(answer.read())["error"]["code"] == "shutting_down"
    assert gw.proc.wait(delay + grace + 5) == 0
    # the drain's clock starts at the stop, as the supervisor's deadline does, not once serving
    assert delay + grace - 0.25 <= answered <= delay + grace + 1
    waiting.close()


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_stop_with_nothing_in_flight_does_not_wait(start_gateway):
    """Without connections there is nothing to wait for: the stop takes the delay, not the grace."""
    gw = start_gateway(slow_stream_config(grace_s=30, delay_s=0.5), workers=2)
    assert http_json("POST", gw.base + "/v1/chat/completions", {"model": "echo", "messages": MESSAGES})[0] == 200
    t0 = time.monotonic()
    os.kill(gw.pid, signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    assert 0.5 * 0.9 <= time.monotonic() - t0 < 30 / 2


@pytest.mark.parametrize("config_delay", [0.0, 2.0])
def test_a_reload_never_waits_for_drain_delay_nor_fails_readiness(start_gateway, config_delay):
    """drain_delay_s is for a host going away; a reload's new generation already serves."""
    gw = start_gateway(slow_stream_config(grace_s=10, delay_s=config_delay), workers=2)
    before = set(children_of(gw.pid))
    probes: list[int] = []
    stop = threading.Event()

    def probe():
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        while not stop.is_set():
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            resp.read()
            probes.append(resp.status)
            if resp.getheader("connection") == "close":
                conn.close()
        conn.close()

    t = threading.Thread(target=probe)
    t.start()
    assert wait_for(lambda: len(probes) > 10)
    os.kill(gw.pid, signal.SIGHUP)
    t0 = time.monotonic()
    assert wait_for(lambda: next_generation(gw, before), timeout=20)
    retired_after = time.monotonic() - t0
    stop.set()
    t.join(10)
    assert set(probes) == {200}
    assert retired_after < 10 / 2   # nothing held the old workers: neither the delay nor the grace
