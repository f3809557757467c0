"""What a request's metrics cost on its path: recorded through its deployment's resolved series
(the segment's ``RequestSeries``) against the keyed calls they replaced, in the same run.

Run:  python -m pytest bench/micro/test_bench_metrics.py --benchmark-enable -p no:cacheprovider -s

A non-streamed request with a gateway key records, in order: the deployment's session generation
read (``Engine._serve``), the attempt's outcome (``Attempt.end``), the tokens and cost
(``Engine._account_usage``), the key's usage (``Grant.settle``), and at its answer its code, the
key's code, its duration and the gateway's overhead (``Gateway._answered``).

- keyed: each through ``Metrics``' keyed calls as they were before the series (``KeyedMetrics``:
  ``request``, ``upstream``, ``usage`` building their keys per call, ``("requests_total", (name, "200"))``).
- series: the same records through ``metrics.series(name)``, as the request path makes them now.
Both land in the same words (``tests/test_metrics_series.py``); the figure is their ratio.
With ``--benchmark-disable`` (the default in pyproject) the test runs once, quickly.
"""
from __future__ import annotations

import timeit

import pytest

from fastinfer.config import parse_config
from fastinfer.metrics import Metrics
from fastinfer.process.hostwide import HostState

CONFIG = {"deployments": [{"name": "gpt-4o", "provider": "openai_compatible", "model": "m",
                           "replicas": [{"name": "r0", "base_url": "http://127.0.0.1:9/v1"},
                                        {"name": "r1", "base_url": "http://127.0.0.1:10/v1"}]}],
          "keys": [{"name": "team", "key_sha256": "0" * 64}]}


@pytest.fixture
def metrics():
    state = HostState.create(parse_config(CONFIG), 1)
    yield Metrics(state.metrics_layout, state.segment)
    state.close()


class KeyedMetrics(Metrics):
    """``Metrics``' request-path calls as they were before the series (each builds its key per call)."""

    def request(self, deployment: str, status: int) -> None:
        code = str(status)
        if deployment not in self.layout.replicas:
            deployment = ""
        key = ("requests_total", (deployment, code))
        self._add(key if key in self._c else ("requests_total", (deployment, "other")))

    def upstream(self, deployment: str, replica: str, outcome: str) -> None:
        self._add(("upstream_requests_total", (deployment, replica, outcome)))

    def observe(self, histogram: str, deployment: str, seconds: float) -> None:
        index = self._h.get((histogram, deployment))
        if index is not None and seconds >= 0:
            self.histograms.observe(index, seconds)

    def session_generation(self, deployment: str) -> int:
        return self.counters.get(self._c[("_session_generation", (deployment,))])

    def usage(self, deployment: str, prompt: int, completion: int, cached: int, cost_usd: float,
              estimated: bool = False) -> None:
        if estimated:
            self._add(("usage_estimated_total", (deployment,)))
        self._add(("tokens_total", (deployment, "input")), prompt)
        self._add(("tokens_total", (deployment, "output")), completion)
        if cached:
            self._add(("tokens_total", (deployment, "cached")), cached)
        if cost_usd:
            self._add(("cost_usd_total", (deployment,)), round(cost_usd * 1e9))

    def key_request(self, name: str, status: int) -> None:
        key = ("key_requests_total", (name, str(status)))
        self._add(key if key in self._c else ("key_requests_total", (name, "other")))

    def key_usage(self, name: str, prompt: int, completion: int, cached: int, cost_usd: float) -> None:
        self._add(("key_tokens_total", (name, "input")), prompt)
        self._add(("key_tokens_total", (name, "output")), completion)
        if cached:
            self._add(("key_tokens_total", (name, "cached")), cached)
        if cost_usd:
            self._add(("key_cost_usd_total", (name,)), round(cost_usd * 1e9))


def _keyed(m: KeyedMetrics) -> None:
    """The records as the request path made them before (``Gateway._answered`` and the engine's calls)."""
    m.session_generation("gpt-4o")
    m.upstream("gpt-4o", "r0", "success")
    m.usage("gpt-4o", 812, 301, 0, 0.00504)
    m.key_usage("team", 812, 301, 0, 0.00504)
    m.request("gpt-4o", 200)
    m.key_request("team", 200)
    m.observe("request_duration_seconds", "gpt-4o", 0.012345)
    m.observe("overhead_seconds", "gpt-4o", 0.000321)


def _series(m: Metrics, series, key_series) -> None:
    """The same records as the request path makes them now (the key's series is the grant's and the
    gateway's: looked up once per key, not per request)."""
    series.session_generation()
    series.upstream("r0", "success")
    series.usage(812, 301, 0, 0.00504)
    key_series.usage(812, 301, 0, 0.00504)
    m.series("gpt-4o").answered(200, 0.012345, 0.000321, None)
    key_series.request(200)


def best_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def test_request_metrics_through_series_against_keyed_calls(benchmark, metrics):
    n = 500 if benchmark.disabled else 100_000
    keyed = KeyedMetrics(metrics.layout, metrics.segment)
    series = metrics.series("gpt-4o")
    before = metrics.counters.snapshot()
    keyed_us = best_us(lambda: _keyed(keyed), n)
    between = metrics.counters.snapshot()
    key_series = metrics.key_series("team")
    series_us = best_us(lambda: _series(metrics, series, key_series), n)
    after = metrics.counters.snapshot()
    # the same words moved by the same amounts: the two paths record the same request
    assert [b - a for a, b in zip(before, between)] == [c - b for b, c in zip(between, after)]
    assert any(b != a for a, b in zip(before, between))
    benchmark.extra_info.update({"keyed_us": round(keyed_us, 3), "series_us": round(series_us, 3),
                                 "series_over_keyed": round(series_us / keyed_us, 2)})
    print(f"\na request's metrics: {series_us:.2f} us through its series, {keyed_us:.2f} us through keyed "
          f"calls (x{series_us / keyed_us:.2f})")
    benchmark(_series, metrics, series, key_series)
