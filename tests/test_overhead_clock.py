"""The gateway's overhead is measured at microsecond resolution, so the histogram's sub-millisecond buckets fill.

uvloop's ``loop.time()`` is cached once per loop iteration with a millisecond
resolution: measured with it, every overhead was 0 or a whole millisecond, and
the buckets between 100 µs and 1 ms stayed empty.
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


def bucket(text: str, le: str) -> float:
    return metric_value(text, f'fastinfer_overhead_seconds_bucket{{deployment="mk",le="{le}"}}')


def test_overhead_has_microsecond_resolution_and_fills_the_sub_millisecond_buckets(start_gateway):
    gw = start_gateway(CONFIG, workers=1)
    seen: list[float] = []
    # a bounded number of requests, until a few have landed between 100 µs and 1 ms (a busy
    # machine may push some past 1 ms; nothing here depends on how fast the gateway is)
    while len(seen) < 300 and sum(0.1005 < v < 0.9995 for v in seen) < 5:
        seen.append(overhead_ms(gw))
    assert any(v != round(v) for v in seen), f"whole milliseconds only: {seen[:20]}"
    sub_ms = sum(0.1005 < v < 0.9995 for v in seen)
    assert sub_ms >= 5, f"no overhead between 0.1 and 1 ms in {len(seen)} requests: {sorted(seen)[:20]}"

    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_overhead_seconds_count{deployment="mk"}') == len(seen)
    # the histogram holds what the headers said (a value rounded in the header may sit on either
    # side of a bucket edge, hence the margins above)
    assert bucket(text, "0.001") - bucket(text, "0.0001") >= sub_ms
    assert bucket(text, "0.001") >= sum(v < 0.9995 for v in seen)
