"""A worker frees what each request made by reference counting: no request shape leaves a reference
cycle behind for the cyclic garbage collector (``fastinfer_worker_gc_collected_objects_total``).

Topology: http.client (one keep-alive connection) -> fastinfer serve (1 worker) -> mock-upstream,
every route on every upstream format, whole and streamed, and answers refused before any upstream.
A cycle left by one kind of request adds its objects to the collector's young generation with each
such request; past the worker's threshold (2,000 net allocations) a collection frees them and the
counter shows it. A finished stream once left ~15 objects (its exchange kept the stream's end
callback): 600 streams here would show some 9,000.
"""
from __future__ import annotations

import http.client
import json
import time

from conftest import every_format_config
from procs import metric_value, metrics_text

ROUTES = ("/v1/chat/completions", "/v1/messages")
MODELS = ("oa", "an", "ge", "mk")      # openai_compatible, anthropic, gemini upstreams; the built-in mock
EACH = 100                             # requests of each kind
REFUSED = [
    ("/v1/chat/completions", b'{"model":"nope","messages":[{"role":"user","content":"x"}]}', 404),
    ("/v1/chat/completions", b'{"model":', 400),
    ("/v1/messages", b'{"model":"an","max_tokens":"x","messages":[]}', 400),
]
COLLECTED = 'fastinfer_worker_gc_collected_objects_total{worker="0"}'


def kinds():
    """(route, body, status) of every kind of request."""
    for route in ROUTES:
        for model in MODELS:
            for stream in (False, True):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
                if route == "/v1/messages":
                    body["max_tokens"] = 20
                yield route, json.dumps(body).encode(), 200
    yield from REFUSED


def send(conn: http.client.HTTPConnection, route: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", route, body, {"content-type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def collected(gw) -> float:
    return metric_value(metrics_text(gw), COLLECTED)


def test_no_kind_of_request_leaves_a_reference_cycle_behind(start_gateway, mock_upstream):
    gw = start_gateway(every_format_config(mock_upstream.base), workers=1)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        for route, body, status in kinds():      # warm: first-use caches are not the requests' garbage
            assert send(conn, route, body)[0] == status, (route, body)
        time.sleep(1.2)                           # the worker publishes its counters once a second
        before = collected(gw)
        sent = 0
        for route, body, status in kinds():
            for _ in range(EACH):
                answered, raw = send(conn, route, body)
                assert answered == status, (route, body, raw[:300])
                sent += 1
        time.sleep(1.2)
        freed = collected(gw) - before
    finally:
        conn.close()
    # none expected; the bound (under one object a request) leaves room for a one-off cycle, not a per-request one
    assert freed < sent / 10, f"the cyclic GC freed {freed:.0f} objects over {sent} requests"
