"""One send per message: the upstream request's head and body, the client answer's head and body, and
a stream's head and first event each leave the worker in a single write system call.

strace, attached to the one worker, shows every write-family call with the start of its bytes.
"""
from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import upstream_config
from procs import children_of, http_json, wait_for

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")
MESSAGES = [{"role": "user", "content": "ping"}]
_CALL = re.compile(r'^(?:\[pid +\d+\] )?(write|writev|sendto|sendmsg)\((\d+), (.*)$', re.M)


def traced_writes(pid: int, port: int, run) -> list[str]:
    """The arguments of each write-family call ``pid`` (any thread) made while ``run()`` ran."""
    return [m.group(3) for m in _CALL.finditer(traced(pid, port, run, "sendto,sendmsg"))]


def traced(pid: int, port: int, run, calls: str) -> str:
    """strace's lines for the system calls ``calls`` (its ``-e trace=`` list) ``pid`` (any thread) made
    while ``run()`` ran, and its writes (how it knows it is attached)."""
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-s", "4096", "-e", f"trace=write,writev,{calls}",
                               "-p", str(pid)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(tracer.stderr), daemon=True)
    reader.start()

    def poke() -> bool:   # a request whose answer strace sees: then it is attached
        http_json("GET", f"http://127.0.0.1:{port}/healthz", headers={"connection": "close"})
        return any("/healthz" in line or "status" in line for line in list(lines))

    try:
        assert wait_for(poke), "strace never saw the worker write"
        time.sleep(0.3)      # the probe's answer may still be ending: its calls are not the run's
        seen = len(lines)
        run()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=20)
        reader.join(20)
    return "".join(lines[seen:])


class Requests:
    """``count`` requests with ``body``, each on a connection of its own."""

    def __init__(self, port: int, body: dict, count: int = 3):
        self.port = port
        self.body = body
        self.count = count

    def __call__(self) -> None:
        for _ in range(self.count):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            conn.request("POST", "/v1/chat/completions", json.dumps(self.body), {"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
            conn.close()


def test_non_streaming_request_and_answer_each_go_out_in_one_write(start_gateway, mock_upstream):
    gw = start_gateway(upstream_config(mock_upstream.base), workers=1)
    assert wait_for(lambda: len(children_of(gw.pid)) == 1)
    worker = children_of(gw.pid)[0]
    calls = traced_writes(worker, gw.port, Requests(gw.port, {"model": "m", "messages": MESSAGES}))
    upstream = [c for c in calls if "POST /v1/chat/completions HTTP/1.1" in c]
    answers = [c for c in calls if "HTTP/1.1 200" in c and "x-fastinfer-replica" in c.lower()]
    assert len(upstream) >= 3 and len(answers) >= 3, calls
    # the call that carries a head carries its body too
    assert all('\\"messages\\"' in c or '"messages"' in c for c in upstream), upstream
    assert all("chat.completion" in c for c in answers), answers


def test_a_streams_head_goes_out_with_its_first_event(start_gateway, mock_upstream):
    gw = start_gateway(upstream_config(mock_upstream.base), workers=1)
    assert wait_for(lambda: len(children_of(gw.pid)) == 1)
    worker = children_of(gw.pid)[0]
    mock_upstream.control(tokens=4, itl_ms=20)    # every event its own read and write
    calls = traced_writes(worker, gw.port, Requests(gw.port, {"model": "m", "messages": MESSAGES, "stream": True}))
    heads = [c for c in calls if "text/event-stream" in c]
    assert len(heads) >= 3, calls
    assert all("data: " in c for c in heads), heads
    # and no call carries a head alone
    assert not [c for c in calls if "HTTP/1.1 200" in c and "data: " not in c and "event-stream" in c]


def test_a_streams_last_event_goes_out_with_the_chunked_terminator(start_gateway):
    # the in-process mock ends its stream right after its last event, as an upstream whose end
    # comes in the same read; the pause between words makes every other event its own write
    gw = start_gateway("""
        [[deployments]]
        name = "m"
        provider = "mock"
        mock = { tokens = 3, itl_ms = 20 }
    """, workers=1)
    assert wait_for(lambda: len(children_of(gw.pid)) == 1)
    worker = children_of(gw.pid)[0]
    calls = traced_writes(worker, gw.port, Requests(gw.port, {"model": "m", "messages": MESSAGES, "stream": True}))
    streamed = [c for c in calls if "data: " in c]
    ends = [c for c in calls if "0\\r\\n\\r\\n" in c]
    assert len(ends) >= 3 and len(streamed) >= 3 * 4, calls
    # the call that carries [DONE] ends the response too, and no call carries the terminator alone
    assert all("[DONE]" in c for c in ends), ends
    assert all(c in ends for c in streamed if "[DONE]" in c), streamed


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_asks_the_kernel_for_no_process_id(start_gateway, mock_upstream, stream):
    # on Python 3.11 each asyncio.get_running_loop() is a getpid() system call: the request path
    # uses the loop it was given. (A timer of the worker's may still ask once in a while.)
    gw = start_gateway(upstream_config(mock_upstream.base), workers=1)
    assert wait_for(lambda: len(children_of(gw.pid)) == 1)
    worker = children_of(gw.pid)[0]
    body = {"model": "m", "messages": MESSAGES, "stream": stream}
    Requests(gw.port, body, count=1)()     # the upstream connection's first connect may ask: not traced
    lines = traced(worker, gw.port, Requests(gw.port, body, count=20), "getpid")
    assert lines.count("getpid()") <= 2, lines
