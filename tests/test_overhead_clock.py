"""The gateway's overhead is measured at microsecond resolution, so the histogram's sub-millisecond buckets fill.

uvloop's ``loop.time()`` is cached once per loop iteration with a millisecond
resolution: measured with it, every overhead was 0 or a whole millisecond, and
the sub-millisecond buckets stayed empty.
"""
from __future__ import annotations

import urllib.request

from procs import metric_value, metrics_text

CONFIG = """
[[deployments]]
name = "mk"
provider = "mock"
mock = { tokens = 2 }
"""
BODY = b'{"model": "mk", "messages": [{"role": "user", "content": "hi"}]}'


def overhead_ms(gw) -> float:
    req = urllib.request.Request(gw.base + "/v1/chat/completions", data=BODY, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return float(resp.headers["x-fastinfer-overhead-ms"])


def bucket(text: str, le: float) -> float:
    return metric_value(text, f'fastinfer_overhead_seconds_bucket{{deployment="mk",le="{le:g}"}}')


SUB_MS_EDGES = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001)


def test_overhead_has_microsecond_resolution_and_fills_the_sub_millisecond_buckets(start_gateway):
    gw = start_gateway(CONFIG, workers=1)
    seen: list[float] = []
    # a bounded number of requests, until a few have landed under 1 ms (a busy machine may push
    # some past it; nothing here depends on how fast the gateway is, only on what it reported)
    while len(seen) < 300 and sum(v < 0.9995 for v in seen) < 20:
        seen.append(overhead_ms(gw))
    assert any(v != round(v) for v in seen), f"whole milliseconds only: {seen[:20]}"
    sub_ms = [v for v in seen if v < 0.9995]
    assert len(sub_ms) >= 20, f"fewer than 20 of {len(seen)} overheads under 1 ms: {sorted(seen)[:20]}"
    assert any(v not in (0.0, 1.0) for v in sub_ms)

    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_overhead_seconds_count{deployment="mk"}') == len(seen)
    # each sub-millisecond bucket holds what the headers said: the header is rounded to the
    # microsecond, so a value within 1 µs of an edge may sit on either side of it
    for le in SUB_MS_EDGES:
        edge_ms = le * 1000
        surely_in = sum(v < edge_ms - 0.001 for v in seen)
        maybe_in = sum(v <= edge_ms + 0.001 for v in seen)
        assert surely_in <= bucket(text, le) <= maybe_in, (le, sorted(seen)[:20])
